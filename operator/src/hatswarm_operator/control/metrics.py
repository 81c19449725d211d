"""The operator's own Prometheus metrics (the agents export theirs on each node).

- `hatswarm_operator_reconciles_total{kind,trigger,result}`: kopf handler runs
  (`trigger="handler"`) and pool control-loop ticks (`trigger="loop"`)
- `hatswarm_operator_placement_duration_seconds`: one pool tick (probe, plan, act, publish)
- `hatswarm_operator_nodes{state="up"|"down"}`: agent nodes over every pool this replica runs
- `hatswarm_operator_failovers_total`: nodes that left a pool while holding its traffic
- `hatswarm_operator_loop_lag_seconds`: how late the event loop runs a timer (a busy loop
  delays every pool's probes, hence failure detection)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from hatswarm_operator.finops.metrics import CostMetrics

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "hatswarm_operator_reconciles",
    "Reconciliations: kopf handler runs and pool control-loop ticks",
    ["kind", "trigger", "result"],
    registry=REGISTRY,
)
PLACEMENT_SECONDS = Histogram(
    "hatswarm_operator_placement_duration_seconds",
    "One pool tick: probe agents, plan placement, load/unload, publish status",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
LOOP_LAG_SECONDS = Histogram(
    "hatswarm_operator_loop_lag_seconds",
    "How much later than asked the operator's event loop woke a sleeping timer",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
NODES = Gauge(
    "hatswarm_operator_nodes",
    "Agent nodes known to the operator, by whether they are in their pool",
    ["state"],
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "hatswarm_operator_failovers",
    "Nodes that left a pool (agent unreachable, node NotReady or cordoned)",
    registry=REGISTRY,
)

PROBER_RESTARTS = Counter(
    "hatswarm_operator_prober_restarts",
    "Times a pool's node prober ended and was started again (failures went unseen meanwhile)",
    registry=REGISTRY,
)

_node_counts: dict[tuple[str, str], tuple[int, int]] = {}


def set_pool_nodes(namespace: str, pool: str, up: int, down: int) -> None:
    """Record one pool's node counts; the gauge is the sum over pools."""
    _node_counts[(namespace, pool)] = (up, down)
    _publish_nodes()


def forget_pool(namespace: str, pool: str) -> None:
    _node_counts.pop((namespace, pool), None)
    _publish_nodes()


def _publish_nodes() -> None:
    NODES.labels(state="up").set(sum(u for u, _ in _node_counts.values()))
    NODES.labels(state="down").set(sum(d for _, d in _node_counts.values()))


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Expose /metrics on `port` (a daemon thread)."""
    start_http_server(port, addr=host, registry=REGISTRY)


_cost: CostMetrics | None = None


def cost() -> CostMetrics:
    """The live cost series, registered on the operator's registry on first use."""
    global _cost
    if _cost is None:
        _cost = CostMetrics(REGISTRY)
    return _cost
