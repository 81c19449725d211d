"""What every `hatswarm` subcommand's `main(argv) -> int` shares."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parse, turning argparse's SystemExit (usage error, --help) into an exit code to return,
    so subcommands can be called as functions by tests and by the dispatcher."""
    try:
        return parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
