"""The `python bench/<name>.py [--quick] [--out FILE]` entry point the benchmarks share.

`bench/run.py` calls each benchmark's `run()` itself; this is for running one by hand.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def standalone(run: Callable[[bool], dict[str, Any]], default_out: Path, description: str) -> int:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="one short round (smoke)")
    p.add_argument("--out", type=Path, default=default_out, help="where to write the JSON")
    args = p.parse_args()
    text = json.dumps(run(args.quick), indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0
