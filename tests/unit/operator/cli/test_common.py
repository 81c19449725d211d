"""One way from a subcommand's errors to exit codes (usage 2, failure 1, success 0), each error
one line on stderr; defaults in --help; `-o`; the deprecated `--json` still works."""

from __future__ import annotations

import argparse

import pytest
from hatswarm_operator.cli.common import (
    CommandError,
    Parser,
    UsageError,
    add_output,
    emit,
    failures,
    run,
    usage_errors,
)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="hatswarm thing")
    p.add_argument("--n", type=int, default=0, help="a number")
    p.add_argument("--name", default="x")
    add_output(p)
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
    if args.n == 4:
        raise RuntimeError("a bug\nover two lines")
    emit(args.output, {"n": args.n}, lambda: f"N={args.n}")
    return 0


@pytest.mark.parametrize(
    ("argv", "code", "err"),
    [
        ([], 0, ""),
        (["--n", "x"], 2, "hatswarm thing: error: argument --n: invalid int value: 'x'"),
        (["--nn", "1"], 2, "hatswarm thing: error: unrecognized arguments: --nn 1"),
        (["--n", "-1"], 2, "hatswarm thing: error: --n must be >= 0"),
        (["--n", "7"], 2, "hatswarm thing: error: 7"),
        (["--n", "3"], 1, "hatswarm thing: error: the service is down"),
        (["--n", "9"], 1, "hatswarm thing: error: cannot write: disk full"),
        (["--n", "4"], 1, "hatswarm thing: error: RuntimeError: a bug over two lines"),
        (["--help"], 0, ""),
    ],
)
def test_exit_codes_and_one_line(
    argv: list[str], code: int, err: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(parser(), argv, command) == code
    stderr = capsys.readouterr().err
    assert err in stderr
    if code:
        assert stderr.count("\n") == 1 and "Traceback" not in stderr


def test_debug_prints_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parser(), ["--n", "4", "--debug"], command) == 1
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and "RuntimeError: a bug" in stderr


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parser(), ["--help"], command) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "a number (default: 0)" in text
    assert "--name NAME (default: x)" in text
    assert "(default: table)" in text
    assert "--json" not in text  # deprecated: hidden


@pytest.mark.parametrize(
    ("argv", "out"),
    [
        ([], "N=0\n"),
        (["-o", "json"], '{\n  "n": 0\n}\n'),
        (["-o", "yaml"], "n: 0\n"),
        (["--json"], '{\n  "n": 0\n}\n'),
    ],
)
def test_output_formats(argv: list[str], out: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parser(), argv, command) == 0
    captured = capsys.readouterr()
    assert captured.out == out
    assert ("--json is deprecated, use -o json" in captured.err) == ("--json" in argv)
