"""One way from a subcommand's errors to exit codes: usage 2, failure 1, success 0."""

from __future__ import annotations

import argparse

import pytest
from hatswarm_operator.cli.common import CommandError, UsageError, failures, run, usage_errors


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hatswarm thing")
    p.add_argument("--n", type=int, default=0)
    return p


def command(args: argparse.Namespace) -> int:
    if args.n < 0:
        raise UsageError("--n must be >= 0")
    with usage_errors(KeyError):
        {}[args.n] if args.n == 7 else None
    with failures(OSError, what="cannot write: "):
        if args.n == 9:
            raise OSError("disk full")
    if args.n == 3:
        raise CommandError("the service is down")
    return 0


@pytest.mark.parametrize(
    ("argv", "code", "err"),
    [
        ([], 0, ""),
        (["--n", "x"], 2, "invalid int value"),
        (["--n", "-1"], 2, "hatswarm thing: error: --n must be >= 0"),
        (["--n", "7"], 2, "usage: hatswarm thing"),
        (["--n", "3"], 1, "hatswarm thing: the service is down"),
        (["--n", "9"], 1, "hatswarm thing: cannot write: disk full"),
        (["--help"], 0, ""),
    ],
)
def test_exit_codes(
    argv: list[str], code: int, err: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(parser(), argv, command) == code
    assert err in capsys.readouterr().err
