"""What every `hatswarm` subcommand shares, in the habits of kubectl and helm.

- Exit codes: a usage error (bad flags or input) exits 2, a failure (a service down, a file
  that cannot be written) exits 1, success 0; either error is one line on stderr naming what
  was wrong (the flag, file, port or URL). No traceback unless `--debug` (or HATSWARM_DEBUG=1).
- Output: commands that print data take `-o table|json|yaml` and print to stdout; files are
  written only where a path flag (`--out FILE`, `--plot FILE`) names them.
- `--help` shows each flag's default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import yaml

OUTPUTS = ("table", "json", "yaml")
DEBUG_ENV = "HATSWARM_DEBUG"


class UsageError(Exception):
    """The input is wrong: exit 2."""


class CommandError(Exception):
    """The command could not do its job: exit 1."""


def one_line(text: object) -> str:
    """A message on one line (YAML and gRPC errors span several)."""
    return " ".join(str(text).split())


def _shows_default(action: argparse.Action) -> bool:
    """An option whose default says something (not None, a flag's False, an empty list)."""
    default = action.default
    return (
        bool(action.option_strings)
        and action.nargs != 0
        and default is not None
        and default is not argparse.SUPPRESS
        and not isinstance(default, bool)
        and default not in ([], "")
    )


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" not in text and _shows_default(action):
            text = f"{text} (default: %(default)s)".lstrip()
        return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, defaults in --help and a --debug flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="print the traceback of a failure")

    def format_help(self) -> str:
        # argparse skips the help formatter for options without help text: give those one
        # that shows their default.
        for action in self._actions:
            if action.help is None and _shows_default(action):
                action.help = "(default: %(default)s)"
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")


class Deprecated(argparse.Action):
    """An old flag kept working for scripts: it sets what `replacement` sets, with a warning.

    `nargs=0` flags store `const` (`--json` for `-o json`); others store their value.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, replacement: str, **kw: Any):
        self.replacement = replacement
        kw.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kw)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"{parser.prog}: warning: {option_string} is deprecated, use {self.replacement}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_output(parser: argparse.ArgumentParser, json_flag: bool = True) -> None:
    """`-o table|json|yaml`, and (for commands that had it) the deprecated `--json` flag."""
    parser.add_argument("-o", "--output", choices=OUTPUTS, default="table", help="output format")
    if json_flag:
        parser.add_argument(
            "--json", action=Deprecated, dest="output", nargs=0, const="json",
            replacement="-o json",
        )  # fmt: skip


def emit(output: str, data: Any, table: Callable[[], str]) -> None:
    """Print `data` as JSON or YAML, or the human table `table()` renders."""
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
    else:
        print(table())


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
    """Parse `argv` and run `command`: :class:`UsageError` exits 2, :class:`CommandError` and
    anything unforeseen exit 1, each as one line on stderr (the traceback only with --debug)."""
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    debug = bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV) == "1"
    prog = parser.prog
    try:
        return command(args)
    except UsageError as err:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(err)} (see `{prog} --help`)", file=sys.stderr)
        return 2
    except CommandError as err:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # unforeseen: still one line, the traceback on request
        if debug:
            traceback.print_exc()
        what = f"{type(err).__name__}: {one_line(err)}" if str(err) else type(err).__name__
        print(f"{prog}: error: {what} (--debug shows the traceback)", file=sys.stderr)
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
