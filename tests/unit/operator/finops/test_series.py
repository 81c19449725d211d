"""Every metric name a FinOps query reads is one the agents or the operator export."""

from __future__ import annotations

import re
from pathlib import Path

from hatswarm_agent.serving.metrics import METRIC_NAMES as AGENT_METRICS
from hatswarm_operator.cli import incident as incident_cli
from hatswarm_operator.cli import report as report_cli
from hatswarm_operator.finops import incident, series, showback
from hatswarm_operator.finops.metrics import METRIC_NAMES as OPERATOR_COST_METRICS

METRIC = re.compile(r"\bhatswarm_[a-z0-9_]+\b(?!\.)")
NOT_METRICS = {"hatswarm_operator", "hatswarm_agent"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported(name: str) -> bool:
    known = set(AGENT_METRICS) | set(OPERATOR_COST_METRICS)
    if name in known:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in known for s in HISTOGRAM_SUFFIXES)


def test_the_named_series_are_exported() -> None:
    assert set(series.AGENT_SERIES) <= set(AGENT_METRICS)
    assert set(series.OPERATOR_SERIES) <= set(OPERATOR_COST_METRICS)
    assert exported(series.bucket(series.REQUEST_DURATION))


def test_no_query_module_spells_an_unknown_metric() -> None:
    for module in (series, showback, incident, report_cli, incident_cli):
        text = Path(str(module.__file__)).read_text()
        names = set(METRIC.findall(text)) - NOT_METRICS
        unknown = sorted(n for n in names if not exported(n))
        assert not unknown, f"{module.__name__}: {unknown}"
