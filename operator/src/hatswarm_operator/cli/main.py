"""`hatswarm`: one entry point; each subcommand lives in its own module, imported lazily.

Lazy imports keep `hatswarm cost` fast and let the CLI run where an optional part (plotting,
kopf) is not installed.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from hatswarm_operator.cli.common import DEBUG_ENV

VERSION = "hatswarm 0.1.0"

# subcommand -> (module, one-line help). Each module has `main(argv: list[str]) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "crds": (
        "hatswarm_operator.cli.crds",
        "write or check the CRD YAML generated from the API types",
    ),
    "validate": ("hatswarm_operator.cli.validate", "validate EdgeModel/InferencePool manifests"),
    "cost": (
        "hatswarm_operator.cli.cost",
        "edge TCO, cloud break-even; `cost incident`, `cost report` from Prometheus",
    ),
    "plan": (
        "hatswarm_operator.cli.plan",
        "devices per accelerator for a load and SLO with K nodes down, vs the cloud",
    ),
    "up": ("hatswarm_operator.cli.up:up_main", "run a whole pool on this machine (no cluster)"),
    "status": ("hatswarm_operator.cli.up:status_main", "show the status of `hatswarm up`"),
    "loadtest": (
        "hatswarm_operator.cli.loadtest",
        "synthetic load on any OIP endpoint: throughput, tails",
    ),
    "demo": ("hatswarm_operator.cli.demo", "the guided demo: pool, load, failover, cache, cost"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hatswarm",
        description="hatswarm: a swarm of Raspberry Pi 5 + AI HAT+ nodes as one inference pool",
        epilog="Run `hatswarm COMMAND --help` for a command's flags; `--debug` before or after "
        "the command prints tracebacks of failures.",
    )
    p.add_argument("--version", action="version", version=VERSION)
    p.add_argument("--debug", action="store_true", help="print the traceback of a failure")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if args and args[0] == "--debug":
        os.environ[DEBUG_ENV] = "1"
        args = args[1:]
    if not args or args[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if args[0] == "--version":
        print(VERSION)
        return 0
    if args[0] not in COMMANDS:
        known = ", ".join(COMMANDS)
        hint = difflib.get_close_matches(args[0], COMMANDS, n=1)
        suggestion = f": did you mean `{hint[0]}`?" if hint else ""
        print(
            f"hatswarm: error: unknown command {args[0]!r}{suggestion} (commands: {known})",
            file=sys.stderr,
        )
        return 2
    target, _ = COMMANDS[args[0]]
    module_name, _, func = target.partition(":")
    entry: Callable[[list[str]], int] = getattr(
        importlib.import_module(module_name), func or "main"
    )
    try:
        return entry(args[1:])
    except BrokenPipeError:  # `hatswarm status | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
