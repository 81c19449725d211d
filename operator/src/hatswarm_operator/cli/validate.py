"""`hatswarm validate`: check manifests offline the way the operator will parse them."""

from __future__ import annotations

import argparse
import sys

from hatswarm_operator.api.manifests import ManifestError, iter_files, load


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hatswarm validate", description=__doc__)
    p.add_argument("-f", "--filename", action="append", required=True, help="file or folder")
    args = p.parse_args(argv)
    failed = 0
    for path in iter_files(args.filename):
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
