"""The values table of charts/hatswarm/README.md, generated from values.schema.json.

    python tools/chart_values_table.py          # rewrite the table between the markers
    python tools/chart_values_table.py --check  # exit 1 when the README is stale

One row per schema node with a `description`; a described node none of whose descendants is
described is one row for its whole subtree (e.g. `pool.routing`, mirroring the CRD). A leaf no
row covers is an error: every value is documented. Defaults come from values.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "hatswarm"
START = "<!-- values-table:start (tools/chart_values_table.py) -->"
END = "<!-- values-table:end -->"


def _described_below(node: dict[str, Any]) -> bool:
    return any(
        "description" in child or _described_below(child)
        for child in (node.get("properties") or {}).values()
    )


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join(str(v) for v in node["enum"])
    t = node.get("type", "")
    return " \\| ".join(t) if isinstance(t, list) else str(t)


def _default(values: Any, path: list[str]) -> str:
    for part in path:
        if not isinstance(values, dict) or part not in values:
            return ""
        values = values[part]
    text = json.dumps(values, separators=(", ", ": "))
    if len(text) > 60:
        text = text[:57] + "..."
    return f"`{text}`".replace("|", "\\|")


def rows(schema: dict[str, Any], values: Any) -> Iterator[tuple[str, str, str, str]]:
    """(path, type, default, description) in schema order; ValueError for undocumented leaves."""

    def walk(node: dict[str, Any], path: list[str]) -> Iterator[tuple[str, str, str, str]]:
        props = node.get("properties") or {}
        if path and "description" in node:
            desc = str(node["description"]).replace("|", "\\|")
            below = _described_below(node)  # a section: its values have rows of their own
            yield ".".join(path), _type(node), "" if below else _default(values, path), desc
            if not below:
                return
        elif path and not props:
            raise ValueError(f"values.schema.json: {'.'.join(path)} has no description")
        for key, child in props.items():
            yield from walk(child, [*path, key])

    yield from walk(schema, [])


def table() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    lines = ["| value | type | default | description |", "| --- | --- | --- | --- |"]
    lines += [f"| `{p}` | {t} | {d} | {desc} |" for p, t, d, desc in rows(schema, values)]
    return "\n".join(lines)


def render(readme: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README has no {START} ... {END} markers")
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the README is stale")
    args = parser.parse_args(argv)
    path = CHART / "README.md"
    current = path.read_text()
    try:
        wanted = render(current)
    except ValueError as err:
        print(f"chart_values_table: {err}", file=sys.stderr)
        return 2
    if args.check:
        if wanted != current:
            print("charts/hatswarm/README.md: values table is stale; run "
                  "python tools/chart_values_table.py", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
