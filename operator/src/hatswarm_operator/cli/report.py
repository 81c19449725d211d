"""``hatswarm cost report``: showback for a window, by team and model, from Prometheus.

    hatswarm cost report --prometheus http://prometheus:9090 --from now-30d --to now \\
        -f examples/ --out report/

Writes ``report.md`` (tables, with the charts embedded), ``report.json``, and PNG charts:
``cost_by_team.png`` and ``cost_by_model.png`` (edge and cloud spend, cost per 1k) and
``requests.png`` (edge vs cloud requests per second over the window). How the cost is
computed: :mod:`hatswarm_operator.finops.showback`. Cost inputs and cloud price come from the
pool manifest (``-f``), else the seed's example device; teams from the EdgeModels'
``costAttribution`` (``-f``), else from the operator's cost series, else "unassigned".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hatswarm_operator.api.manifests import ManifestError, load
from hatswarm_operator.cli.common import Parser, failures, run, usage_errors
from hatswarm_operator.finops import charts
from hatswarm_operator.finops.attribution import PoolCostInputs, pool_cost_inputs
from hatswarm_operator.finops.metrics import Showback, showback_of
from hatswarm_operator.finops.promql import (
    DEFAULT_URL,
    Prometheus,
    PrometheusError,
    parse_duration,
    parse_window,
)
from hatswarm_operator.finops.render import showback_json, showback_markdown
from hatswarm_operator.finops.showback import collect


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="hatswarm cost report",
        description="Showback by team and model for a window: Markdown, JSON and PNG charts.",
    )
    p.add_argument("--prometheus", default=DEFAULT_URL, metavar="URL",
                   help=f"Prometheus base URL (default {DEFAULT_URL})")  # fmt: skip
    p.add_argument("--from", dest="start", required=True, metavar="T1",
                   help="start: now-30d, unix seconds or RFC 3339")  # fmt: skip
    p.add_argument("--to", dest="end", default="now", metavar="T2", help="end (default now)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write")
    p.add_argument("-f", "--file", action="append", default=[], metavar="PATH",
                   help="manifests: the pool's cost inputs and the models' teams")  # fmt: skip
    p.add_argument("--pool", help="the InferencePool whose cost inputs apply (several in -f)")
    p.add_argument("--step", metavar="DURATION", help="timeline resolution")
    p.add_argument("--no-charts", action="store_true", help="Markdown and JSON only")
    return p


def _inputs(args: argparse.Namespace) -> tuple[PoolCostInputs, dict[str, Showback], str]:
    if not args.file:
        return PoolCostInputs(), {}, "the seed's example device (no -f manifests)"
    manifests = load(args.file)
    pools = [p for p in manifests.pools if not args.pool or p.metadata.name == args.pool]
    if len(pools) > 1:
        raise ValueError("several pools in -f: choose one with --pool")
    models = manifests.models
    if pools:
        models = [m for m in models if m.spec.pool == pools[0].metadata.name]
        return pool_cost_inputs(pools[0]), showback_of(models), f"pool {pools[0].metadata.name}"
    return PoolCostInputs(), showback_of(models), "the seed's example device (no pool in -f)"


def _command(args: argparse.Namespace) -> int:
    with usage_errors(ValueError, ManifestError):
        start, end = parse_window(args.start, args.end)
        step = parse_duration(args.step) if args.step else None
        inputs, showback, source = _inputs(args)
    with failures(PrometheusError), Prometheus(args.prometheus) as prom:
        report = collect(
            prom, start, end, inputs=inputs, showback=showback, inputs_from=source, step=step
        )
    out: Path = args.out
    with failures(OSError, what=f"cannot write {out}: "):
        out.mkdir(parents=True, exist_ok=True)
        written: list[str] = []
        if not args.no_charts:
            try:
                written = charts.showback_charts(report, out)
            except ImportError:
                print(
                    "hatswarm cost report: charts need matplotlib: "
                    "pip install 'hatswarm-operator[plot]' (writing tables only)",
                    file=sys.stderr,
                )
        (out / "report.md").write_text(showback_markdown(report, written), encoding="utf-8")
        (out / "report.json").write_text(
            json.dumps(showback_json(report), indent=2), encoding="utf-8"
        )
    print(f"report written to {out / 'report.md'} ({', '.join(['report.json', *written])})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, _command)
