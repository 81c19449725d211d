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
import sys
import time
import traceback
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


def ratios(result: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every ratio a benchmark reports: keys named *ratio*, *_vs_* or under `ratios`."""
    out: list[tuple[str, float]] = []
    if isinstance(result, dict):
        for key, value in result.items():
            path = f"{prefix}{key}"
            if isinstance(value, int | float) and not isinstance(value, bool):
                if "ratio" in key or "_vs_" in key or prefix.endswith("ratios."):
                    out.append((path, float(value)))
            elif isinstance(value, dict) and key not in ("servers", "plan", "versions"):
                out += ratios(value, f"{path}.")
    return out


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def chart(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
        return
    rows = [(f"{b}: {k}", v) for b, r in results.items() for k, v in ratios(r)]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color="#4c72b0")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("ratio against the same-run baseline (see bench/results.json)")
    ax.set_title(f"hatswarm benchmarks, {machine()['date']}, {os.cpu_count()} cores")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def readme_table(results: dict[str, Any]) -> str:
    m = machine()
    lines = [
        f"Measured {m['date']} on {m['cpus']} cores ({m['platform']}, Python {m['python']}) with "
        "`make bench`; raw figures in `bench/results.json`, chart in `bench/results.png`.",
        "",
        "| benchmark | ratio | value |",
        "|---|---|---|",
    ]
    for bench, result in results.items():
        for key, value in ratios(result):
            lines.append(f"| {bench} | {key} | {value:.3f} |")
    return "\n".join(lines)


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
    args = p.parse_args(argv)
    results: dict[str, Any] = {}
    failed = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in BENCHES or not (HERE / BENCHES[name]).exists():
            print(f"== {name}: no such benchmark", file=sys.stderr)
            failed.append(name)
            continue
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            module = load(name)
            run = module.run
            results[name] = run(quick=args.quick) if "quick" in run.__code__.co_varnames else run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        for key, value in ratios(results[name]):
            print(f"  {key:<50} {value:8.3f}")
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
