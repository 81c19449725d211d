"""`hatswarm validate`: check manifests offline the way the operator will parse them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hatswarm_operator.api.common import API_VERSION
from hatswarm_operator.api.manifests import ManifestError, iter_files, load
from hatswarm_operator.cli.common import Parser, one_line, run, usage_errors


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="hatswarm validate", description=__doc__)
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="file, folder (its *.yaml) or - for stdin; repeatable",
    )
    return p


def _command(args: argparse.Namespace) -> int:
    failed = 0
    with usage_errors(ManifestError):
        paths = list(iter_files(args.filename))
    for path in paths:
        try:
            found = load([path])
        except ManifestError as err:
            print(f"INVALID {one_line(err)}", file=sys.stderr)
            failed += 1
            continue
        for doc in found.others:  # kubectl would apply it, but it is not ours to check
            kind, api = doc.get("kind"), doc.get("apiVersion")
            print(
                f"INVALID {path}: {kind}/{(doc.get('metadata') or {}).get('name', '?')} "
                f"({api}) is not a hatswarm kind: expected EdgeModel or InferencePool "
                f"({API_VERSION})",
                file=sys.stderr,
            )
            failed += 1
        if not (found.pools or found.models or found.others):
            print(f"INVALID {path}: no objects in the file", file=sys.stderr)
            failed += 1
        for pool in found.pools:
            print(f"ok      {path}: InferencePool/{pool.metadata.name}")
        for model in found.models:
            print(f"ok      {path}: EdgeModel/{model.metadata.name}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, _command)
