"""`hatswarm validate`: check manifests offline the way the operator will parse them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hatswarm_operator.api.manifests import ManifestError, iter_files, load
from hatswarm_operator.cli.common import run, usage_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hatswarm validate", description=__doc__)
    p.add_argument("-f", "--filename", action="append", required=True, help="file or folder")
    return p


def _command(args: argparse.Namespace) -> int:
    failed = 0
    with usage_errors(ManifestError):
        paths = list(iter_files(args.filename))
    for path in paths:
        try:
            found = load([path])
        except ManifestError as err:
            print(f"INVALID {err}", file=sys.stderr)
            failed += 1
            continue
        for pool in found.pools:
            print(f"ok      {path}: InferencePool/{pool.metadata.name}")
        for model in found.models:
            print(f"ok      {path}: EdgeModel/{model.metadata.name}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, _command)
