"""`make bench`: run every benchmark, write bench/results.json and a chart, update README.

Each benchmark module in this folder has `run(...) -> dict` with its figures measured against a
baseline from the same run (ratios, never absolute targets alone). This runner collects them,
keeps the machine description beside them, and rewrites README's table between the markers
`<!-- bench:start -->` and `<!-- bench:end -->`.

    python bench/run.py [--quick] [--only agent,routing,placement] [--no-readme]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHES = {
    "placement": "placement_bench.py",
    "agent": "agent_bench.py",
    "routing": "routing_bench.py",
    "adapters": "adapter_bench.py",
    "failover": "failover_bench.py",
    "chaos": "chaos_bench.py",
    "fleet": "fleet_bench.py",
    "gguf": "gguf_bench.py",
    "generation": "gen_bench.py",
}


def load(name: str) -> ModuleType:
    path = HERE / BENCHES[name]
    sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


RATIO_KEY = re.compile(r"(_vs_|_over_|(^|_)ratio($|_))")


def ratios(result: Any, prefix: str = "") -> list[tuple[str, float, str]]:
    """Every ratio a benchmark reports, as (name, value, target): keys named *_vs_*, *_over_*
    or *ratio*, and entries of a `ratios` dict (a number, or {value, target})."""
    out: list[tuple[str, float, str]] = []
    if not isinstance(result, dict):
        return out
    for key, value in result.items():
        path = f"{prefix}{key}"
        in_ratios = prefix.endswith("ratios.")
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            if in_ratios or RATIO_KEY.search(key):
                out.append((path, float(value), ""))
        elif isinstance(value, dict):
            if in_ratios and isinstance(value.get("value"), int | float):
                out.append((path, float(value["value"]), str(value.get("target", ""))))
            elif key not in (
                "servers",
                "plan",
                "versions",
                "machine",
                "models",
                "table",
                "rss_mb",
                "vs_previous_run",
            ):
                out += ratios(value, f"{path}.")
    return out


def derive(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Ratios a benchmark leaves implicit, named so `ratios()` lists them."""
    if name == "routing":
        hop, bal, fo = result.get("hop", {}), result.get("balance", {}), result.get("failover", {})
        p2c, rr = bal.get("PowerOfTwoChoices", {}), bal.get("RoundRobin", {})
        derived = {
            "hop_added_ms_vs_1ms_target": hop.get("added_ms", 0) / hop.get("target_ms", 1.0),
            "hop_added_vs_bare_aio_proxy": hop.get("added_ms", 0)
            / (hop.get("minimal_aio_proxy_added_ms") or 1),
            "balance_p99_p2c_vs_round_robin": p2c.get("p99_ms", 0) / (rr.get("p99_ms") or 1),
            "balance_slow_share_p2c_vs_round_robin": p2c.get("shares", {}).get("slow", 0)
            / (rr.get("shares", {}).get("slow") or 1),
            "failover_p99_kill_vs_steady": fo.get("during_kill_p99_ms", 0)
            / (fo.get("steady_p99_ms") or 1),
            "failover_lost_ratio": fo.get("lost", 0) / (fo.get("requests") or 1),
        }
        result = {**result, "ratios": {k: round(v, 3) for k, v in derived.items()}}
    return result


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


AGENT_ROWS = ("raw", "floor", "floor_held", "agent", "agent_uds", "agent_shm", "kserve", "mlserver")


def chart(results: dict[str, Any], path: Path) -> None:
    """One figure: the node agent against its baselines (p50, p99, req/s, memory) on top, every
    benchmark's ratio against its same-run baseline below."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
        return
    rows = [(f"{b}: {k}", v) for b, r in results.items() for k, v, _ in ratios(r)]
    agent = results.get("agent", {})
    table = agent.get("table", {})
    models = list(agent.get("models", {}))
    fig = plt.figure(figsize=(14, 9 + 0.22 * len(rows)))
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1, max(1.0, 0.06 * len(rows))])
    servers = [r for r in AGENT_ROWS if table.get(r)]
    width = 0.8 / max(1, len(servers))
    panels = [
        ("p50_ms", "1-client p50 (ms, log)", grid[0, 0]),
        ("p99_ms", "1-client p99 (ms, log)", grid[0, 1]),
        ("throughput_rps", "8-client req/s (log)", grid[1, 0]),
    ]
    for metric, title, cell in panels:
        ax = fig.add_subplot(cell)
        for i, server in enumerate(servers):
            values = [table[server].get(m, {}).get(metric) or 0 for m in models]
            ax.bar([x + i * width for x in range(len(models))], values, width, label=server)
        ax.set_xticks([x + width * (len(servers) - 1) / 2 for x in range(len(models))], models)
        ax.set_yscale("log")
        ax.set_title(title)
    ax = fig.add_subplot(grid[1, 1])
    rss = agent.get("rss_mb", {})
    groups = sorted(rss.get("after_run", {}))
    ax.bar(
        [x - 0.2 for x in range(len(groups))],
        [rss.get("no_models", {}).get(g, 0) for g in groups],
        0.4,
        label="no models",
    )
    ax.bar(
        [x + 0.2 for x in range(len(groups))],
        [rss["after_run"][g] for g in groups],
        0.4,
        label="every model, after the run",
    )
    ax.set_xticks(range(len(groups)), groups)
    ax.set_title("RSS (MB)")
    ax.legend(fontsize=8)
    fig.axes[0].legend(fontsize=7, ncol=2)
    if rows:
        ax = fig.add_subplot(grid[2, :])
        ax.barh([r[0] for r in rows], [r[1] for r in rows], color="#4c72b0")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("ratio against the same-run baseline (see bench/results.json)")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    contended = agent.get("machine", {}).get("contended")
    fig.suptitle(
        f"hatswarm benchmarks, {machine()['date']}, {os.cpu_count()} cores"
        + (" (CONTENDED: other jobs used the CPU, see the table)" if contended else "")
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))  # room for the title above the panels
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def readme_table(results: dict[str, Any]) -> str:
    m = machine()
    lines = [
        f"Measured {m['date']} on {m['cpus']} cores ({m['platform']}, Python {m['python']}) with "
        "`make bench`; raw figures in `bench/results.json`, chart in `bench/results.png`.",
        "",
        "| benchmark | ratio | value | target |",
        "|---|---|---|---|",
    ]
    for bench, result in results.items():
        for key, value, target in ratios(result):
            lines.append(f"| {bench} | {key} | {value:.3f} | {target} |")
    agent = results.get("agent", {})
    if agent.get("table"):
        lines += [
            "",
            "Node agent and its baselines (same run; tritonclient over loopback gRPC, 8 clients "
            "for throughput; peers in the better of their default and tuned forms per figure):",
            "",
            *load("agent").markdown_table(agent),
        ]
        previous = agent.get("vs_previous_run")
        if previous and previous.get("compared"):
            lines.append(
                f"Against the previous run: {previous['within']} of {previous['compared']} "
                f"figures within 10%."
            )
    lines += fleet_table(results.get("fleet", {}))
    return "\n".join(lines)


def compare_runs(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """How many of the agent table's figures moved by more than 10% since the last run."""
    compared, within, moved = 0, 0, []
    for row, per_model in new.get("table", {}).items():
        for model, entry in per_model.items():
            for metric in ("p50_ms", "p99_ms", "throughput_rps"):
                a = entry.get(metric)
                b = old.get("table", {}).get(row, {}).get(model, {}).get(metric)
                if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
                    continue
                compared += 1
                change = a / b - 1
                if abs(change) <= 0.10:
                    within += 1
                else:
                    moved.append((f"{row}/{model}/{metric}", round(change, 3)))
    moved.sort(key=lambda kv: -abs(kv[1]))
    return {"compared": compared, "within": within, "moved": moved[:20]}


def fleet_table(fleet: dict[str, Any]) -> list[str]:
    """The fleet simulation's absolute figures, one row per size and way of reading."""
    runs = fleet.get("runs") or []
    if not runs:
        return []
    lines = [
        "",
        f"Operator at fleet scale (simulated agents; {fleet.get('steady_s')} s of steady state "
        "per row, so p99 is about the slowest tick; `reads`: watch-fed caches, or the "
        "list-per-tick loop before them; `probe s`: the pool's probe interval; the last "
        "column: node death to its replicas loading elsewhere / Ready, with a "
        f"{fleet.get('load_s')} s model load):",
        "",
        "| nodes | models | reads | probe s | API reads/s | read KB/s | probes/s "
        "| tick p50 / p99 ms | operator CPU % | peak RSS MB "
        "| node death -> reloading / Ready s | duplicate loads |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        st = r["steady"]
        p50, p99 = r.get("tick_p50_s") or 0.0, r.get("tick_p99_s") or 0.0
        fo = r["failover"]
        lines.append(
            f"| {r['nodes']} | {r['models']} | {r['reads']} | {r.get('probe_interval_s', 1.0):g} | "
            f"{st['reads_per_s']:.2f} | "
            f"{st['read_kb_per_s']:.0f} | {r['probes_per_s']:.0f} | "
            f"{1000 * p50:.0f} / {1000 * p99:.0f} | "
            f"{r['operator_cpu_pct']:.0f} | {r['operator_peak_rss_mb']:.0f} | "
            f"{fo.get('detect_s') or 0:.2f} / {fo['recovery_s']:.2f} | {r['duplicate_loads']} |"
        )
    ha = fleet.get("ha")
    if ha:
        lines += [
            "",
            f"Two operator replicas peering (`--priority auto`, peering lifetime "
            f"{ha['peering_lifetime_s']} s), {ha['nodes']} nodes: the agents were probed "
            f"{ha['probes_per_s_while_two_run']:.0f} times a second while both ran (one "
            f"replica's rate: {ha['nodes']}); SIGKILL of the active one -> the standby acting "
            f"after {ha['handover_s']:.1f} s; a node death after that -> Ready elsewhere in "
            f"{ha['failover_after_handover_s']:.1f} s; {ha['duplicate_loads']} duplicate loads, "
            f"{ha['unloads']} unloads.",
        ]
    return lines


def update_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        print("README has no bench markers: table not written", file=sys.stderr)
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table}\n{end}{tail}")
    print("updated README's benchmark table")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one short round each (smoke)")
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--rederive", action="store_true", help="redo ratios/README from --out only")
    args = p.parse_args(argv)
    if args.child:
        run = load(args.child).run
        out = run(quick=args.quick) if "quick" in run.__code__.co_varnames else run()
        args.out.write_text(json.dumps(out, default=str))
        return 0
    # A partial run (--only) keeps the other benchmarks' last figures.
    if args.rederive and args.out.exists():
        payload = json.loads(args.out.read_text())
        payload["results"] = {k: derive(k, v) for k, v in payload["results"].items()}
        args.out.write_text(json.dumps(payload, indent=1, default=str))
        chart(payload["results"], args.out.with_suffix(".png"))
        update_readme(readme_table(payload["results"]))
        return 0
    results: dict[str, Any] = {}
    if args.out.exists() and not args.quick:
        try:
            results = json.loads(args.out.read_text()).get("results", {})
        except ValueError:
            results = {}
    failed = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in BENCHES or not (HERE / BENCHES[name]).exists():
            print(f"== {name}: no such benchmark", file=sys.stderr)
            failed.append(name)
            continue
        print(f"== {name}", flush=True)
        started = time.monotonic()
        # Each benchmark in its own interpreter: tritonclient's protobufs and the agent's own
        # OIP stubs both define package `inference` and cannot share a process.
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            cmd = [sys.executable, __file__, "--child", name, "--out", tmp.name]
            if subprocess.run(cmd + (["--quick"] if args.quick else []), check=False).returncode:
                failed.append(name)
                continue
            fresh = derive(name, json.loads(Path(tmp.name).read_text()))
            if name == "agent" and isinstance(results.get(name), dict):
                fresh["vs_previous_run"] = compare_runs(fresh, results[name])
            results[name] = fresh
        for key, value, target in ratios(results[name]):
            print(f"  {key:<50} {value:8.3f}  {target}")
        print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
    payload = {"machine": machine(), "results": results, "failed": failed}
    args.out.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {args.out}")
    chart(results, args.out.with_suffix(".png"))
    if not args.no_readme and results and not args.quick:
        update_readme(readme_table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
