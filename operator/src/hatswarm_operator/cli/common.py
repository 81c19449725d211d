"""What every `hatswarm` subcommand's `main(argv) -> int` shares: one way from errors to exit
codes. A usage error (bad flags or input) exits 2 with the usage line, as argparse does; a
failure (a service down, a file that cannot be written) exits 1; success 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager


class UsageError(Exception):
    """The input is wrong: exit 2 after the command's usage line."""


class CommandError(Exception):
    """The command could not do its job: exit 1."""


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parse, turning argparse's SystemExit (usage error, --help) into an exit code to return,
    so subcommands can be called as functions by tests and by the dispatcher."""
    try:
        return parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def run(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    command: Callable[[argparse.Namespace], int],
) -> int:
    """Parse `argv` and run `command`, mapping :class:`UsageError` to 2 and
    :class:`CommandError` to 1 (each with its message on stderr)."""
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        return command(args)
    except UsageError as err:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except CommandError as err:
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 1


@contextmanager
def usage_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Report the given exceptions raised inside the block as usage errors (exit 2)."""
    try:
        yield
    except kinds as err:
        raise UsageError(str(err)) from err


@contextmanager
def failures(*kinds: type[Exception], what: str = "") -> Iterator[None]:
    """Report the given exceptions raised inside the block as failures (exit 1), prefixed
    with ``what`` when given."""
    try:
        yield
    except kinds as err:
        raise CommandError(f"{what}{err}") from err
