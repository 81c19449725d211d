"""SLO rules and the Grafana dashboard: promtool, the chart's copies, and metric names that exist.

Every metric a rule or a panel queries must be one the code exports: the agent's
`hatswarm_agent.serving.metrics.METRIC_NAMES` and the operator's `operator_metrics.REGISTRY`, expanded
the way Prometheus exposes them (counters `_total`, histograms `_bucket`/`_sum`/`_count`), plus
the recording rules the rules file defines and Prometheus' own `up`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.externaltools import missing

from .conftest import CHART, MONITORING_APIS, ROOT, Render

OBS = ROOT / "deploy" / "observability"
RULES = OBS / "hatswarm-rules.yaml"
DASHBOARD = OBS / "hatswarm-dashboard.json"
BUILTIN = {"up"}

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_LABELS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile",
    "scalar", "vector", "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "label_values", "topk", "bottomk", "abs", "clamp_min",
    "avg_over_time", "max_over_time", "min_over_time", "absent", "time", "count_over_time",
    "humanize", "humanizeDuration", "humanizePercentage",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (not labels, functions, strings or ranges)."""
    expr = _STRING.sub('""', expr)
    expr = _LABELS.sub("", expr)
    expr = _GROUPING.sub(" ", expr)
    expr = _RANGE.sub("", expr)
    expr = expr.replace("$__rate_interval", "")
    names = set()
    for m in _IDENT.finditer(expr):
        word = m.group(0)
        before = expr[: m.start()].rstrip()
        if word in PROMQL_WORDS or before.endswith(("$", ".")):
            continue
        if re.fullmatch(r"e[0-9]+", word) or (before and before[-1].isdigit()):
            continue  # the exponent of 3.6e6
        names.add(word)
    return names


def exported_names() -> set[str]:
    from hatswarm_agent.serving.metrics import METRIC_NAMES, AgentMetrics

    types = {f.name: f.type for f in AgentMetrics().registry.collect()}
    names: set[str] = set()
    for name in METRIC_NAMES:
        names.add(name)
        if types.get(name) == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    try:
        from hatswarm_operator.control import metrics as operator_metrics
    except ImportError:  # the operator's metrics module is optional for this check
        return names
    for family in operator_metrics.REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def rules_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return doc


def recorded() -> set[str]:
    return {r["record"] for g in rules_doc()["groups"] for r in g["rules"] if "record" in r}


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            out.append((f"${var['name']}", inner.group(1) if inner else q))
    return out


# --- the name extraction itself --------------------------------------------------------------


def test_metric_names_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(hatswarm_x_bucket{pool=~"$pool",'
        ' le="+Inf"}[$__rate_interval]))) / on (pool) scalar(hatswarm:y:target) * 3.6e6'
        ' + count(up{job="hatswarm-agent"} == 1)'
    )
    assert metric_names(expr) == {"hatswarm_x_bucket", "hatswarm:y:target", "up"}


# --- names exist -----------------------------------------------------------------------------


def test_rules_use_only_exported_metrics() -> None:
    known = exported_names() | recorded() | BUILTIN
    used = {
        name
        for g in rules_doc()["groups"]
        for r in g["rules"]
        for name in metric_names(str(r["expr"]))
    }
    assert used - known == set(), f"rules query metrics nobody exports: {sorted(used - known)}"
    assert {"hatswarm_npu_temperature_celsius", "hatswarm_route_requests_total"} <= used


def test_dashboard_uses_only_exported_metrics() -> None:
    known = exported_names() | recorded() | BUILTIN
    unknown = {
        (title, name)
        for title, expr in dashboard_exprs()
        for name in metric_names(expr)
        if name not in known
    }
    assert unknown == set(), f"panels query metrics nobody exports: {sorted(unknown)}"


def test_dashboard_covers_the_pool() -> None:
    dash = json.loads(DASHBOARD.read_text())
    used = {n for _, e in dashboard_exprs() for n in metric_names(e)}
    for needed in (
        "hatswarm_inference_request_duration_seconds_bucket",  # per-model latency
        "hatswarm_inference_request_success_total",  # per-model rate
        "hatswarm_npu_temperature_celsius",  # per-node temperature
        "hatswarm_npu_power_watts",  # per-node watts
        "hatswarm:edge_cost_per_inference_usd:5m",  # cost per inference, edge
        "hatswarm:cloud_cost_per_inference_usd:5m",  # ... and cloud
    ):
        assert needed in used, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in dash["panels"] if p["type"] == "row"}
    assert {"Pool overview", "Models", "Nodes", "Cost: edge vs cloud"} <= titles


# --- promtool --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing("promtool", "make tools; Debian: apt-get install -y prometheus")
    return path


def test_promtool_check_rules(promtool: str) -> None:
    proc = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests(promtool: str) -> None:
    proc = subprocess.run(
        [promtool, "test", "rules", "hatswarm-rules.test.yaml"],
        cwd=OBS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the chart's copies ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hatswarm-rules.yaml", "hatswarm-dashboard.json"])
def test_chart_files_are_copies(name: str) -> None:
    copy = CHART / "files" / name
    assert copy.read_bytes() == (OBS / name).read_bytes(), "run tools/sync-observability.sh"


def test_prometheus_rule_is_the_plain_file_at_defaults(render: Render) -> None:
    objs = render(sets=["monitoring.enabled=true"], api_versions=MONITORING_APIS)
    rule = next(o for o in objs if o["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == rules_doc()["groups"]
    kinds = {o["kind"] for o in objs}
    assert {"ServiceMonitor", "PodMonitor"} <= kinds


def test_monitoring_kinds_only_where_the_cluster_serves_them(render: Render) -> None:
    """.Capabilities: without the Prometheus Operator's CRDs nothing is rendered (an install
    would fail on an unknown kind); with only some, only those."""
    kinds = {o["kind"] for o in render(sets=["monitoring.enabled=true"])}
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & kinds
    some = render(sets=["monitoring.enabled=true"], api_versions=MONITORING_APIS[:1])
    assert {"ServiceMonitor"} == {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & {
        o["kind"] for o in some
    }


def test_every_alert_has_a_runbook_section() -> None:
    """runbook_url on every alert, pointing at a section of RUNBOOK.md that exists; the chart
    moves the base with monitoring.runbookBaseUrl."""
    runbook = (OBS / "RUNBOOK.md").read_text()
    sections = {line[3:].strip().lower() for line in runbook.splitlines() if line.startswith("## ")}
    alerts = [r for g in rules_doc()["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 10
    for rule in alerts:
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base.endswith("deploy/observability/RUNBOOK.md"), url
        assert anchor == rule["alert"].lower() and anchor in sections, rule["alert"]


def test_chart_points_runbooks_at_its_base(render: Render, tmp_path: Path) -> None:
    values = tmp_path / "runbooks.yaml"
    values.write_text("monitoring:\n  enabled: true\n  runbookBaseUrl: https://wiki.example/hs\n")
    rule = next(
        o for o in render(values, api_versions=MONITORING_APIS) if o["kind"] == "PrometheusRule"
    )
    urls = [
        r["annotations"]["runbook_url"]
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    assert "https://wiki.example/hs#hatswarmoperatordown" in urls
    assert all(u.startswith("https://wiki.example/hs#") for u in urls)


def test_vanishing_agents_and_operator_are_alerted_per_namespace_and_pool() -> None:
    rules = {r["alert"]: r for g in rules_doc()["groups"] for r in g["rules"] if "alert" in r}
    assert "by (namespace, pool)" in rules["HatswarmAgentDown"]["expr"]
    assert "by (namespace, pool)" in rules["HatswarmAgentsVanished"]["expr"]
    assert rules["HatswarmOperatorDown"]["expr"].startswith("absent(")


def test_prometheus_rule_takes_thresholds_from_values(render: Render, tmp_path: Path) -> None:
    values = tmp_path / "slo.yaml"  # (helm 4's --set reads 0.06 as a string: use a file)
    values.write_text(
        "monitoring:\n  enabled: true\n  slo: {p99LatencySeconds: 0.06}\n"
        "  cost: {nodeUsdPerHour: 0.02}\n"
    )
    objs = render(values, api_versions=MONITORING_APIS)
    rule = next(o for o in objs if o["kind"] == "PrometheusRule")
    consts = {r["record"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}
    assert consts["hatswarm:slo_p99_latency_seconds:target"] == "vector(0.06)"
    assert consts["hatswarm:node_cost_usd_per_hour:config"] == "vector(0.02)"
    assert consts["hatswarm:npu_temperature_celsius:limit"] == "vector(85)"


def test_pod_monitor_labels_node_and_pool(render: Render) -> None:
    pm = next(
        o
        for o in render(sets=["monitoring.enabled=true"], api_versions=MONITORING_APIS)
        if o["kind"] == "PodMonitor"
    )
    endpoint = pm["spec"]["podMetricsEndpoints"][0]
    targets = {r["targetLabel"] for r in endpoint["relabelings"]}
    assert targets == {"node", "pool"}  # what the rules group by
    assert pm["spec"]["jobLabel"] == "app.kubernetes.io/name"  # job="hatswarm-agent"


def test_dashboard_config_map(render: Render) -> None:
    cm = next(
        o
        for o in render(sets=["monitoring.dashboard.enabled=true"])
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    )
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["hatswarm.json"]) == json.loads(DASHBOARD.read_text())


def test_scrape_example_is_valid_yaml() -> None:
    scrape = yaml.safe_load((OBS / "prometheus-scrape.yaml").read_text())
    jobs = {j["job_name"] for j in scrape["scrape_configs"]}
    assert jobs == {"hatswarm-agent", "hatswarm-operator"}
