"""Live attribution: NPU-second shares, counter resets, measured vs nameplate energy, fallback."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.core.inventory import ModelObs, ModelState, NodeState
from hatswarm_operator.core.status import (
    ModelTokens,
    live_model_cost_per1k,
    live_model_tokens,
    live_pool_cost,
)
from hatswarm_operator.finops.attribution import (
    CostLedger,
    ModelSample,
    NodeSample,
    PoolCostInputs,
    account,
    node_samples,
    pool_cost_inputs,
)
from hatswarm_operator.finops.metrics import METRIC_NAMES, CostMetrics, showback_of
from hatswarm_operator.finops.tco import SECONDS_PER_YEAR, DeviceCostInputs, device_annual_cost
from prometheus_client import CollectorRegistry, generate_latest

D = Decimal
INPUTS = PoolCostInputs(device=DeviceCostInputs(), cloud_usd_per_1k=D("0.50"))
DEVICE = device_annual_cost(DeviceCostInputs())


def node(name: str, *models: ModelSample, watts: float | None = None, **kw: object) -> NodeSample:
    return NodeSample(name, models=models, watts=watts, **kw)  # type: ignore[arg-type]


def nameplate_window_usd(seconds: float) -> Decimal:
    return DEVICE.total_usd_per_year * D(seconds) / SECONDS_PER_YEAR


def test_first_tick_is_a_baseline() -> None:
    ledger = CostLedger()
    live = account(ledger, INPUTS, [node("n1", ModelSample("a", "1", 500.0, 10_000))], 100.0)
    assert live.window_usd == 0
    assert live.inferences == 0
    assert live.models == {}


def test_three_times_the_npu_seconds_pays_three_times_regardless_of_requests() -> None:
    ledger = CostLedger()
    account(
        ledger,
        INPUTS,
        [node("n1", ModelSample("detector", "1"), ModelSample("classifier", "1"))],
        0.0,
    )
    # The detector served 10x fewer requests but held the NPU 3x as long.
    live = account(
        ledger,
        INPUTS,
        [
            node(
                "n1",
                ModelSample("detector", "1", compute_seconds=30.0, inference_count=100),
                ModelSample("classifier", "1", compute_seconds=10.0, inference_count=1000),
            )
        ],
        60.0,
    )
    det, cls = live.models["detector"], live.models["classifier"]
    assert det.window_usd == 3 * cls.window_usd
    assert det.window_usd + cls.window_usd == live.window_usd  # busy node: nothing idle
    assert live.window_usd == nameplate_window_usd(60)
    # per inference: 3x the money over 10x fewer inferences is 30x per inference
    assert det.per_inference_usd == 30 * cls.per_inference_usd  # type: ignore[operator]
    assert live.inferences == 1100
    assert live.measured_per_inference_usd == live.window_usd / 1100
    per1k = live_model_cost_per1k(live)
    assert per1k["detector"] == pytest.approx(30 * per1k["classifier"], rel=1e-3)  # type: ignore[operator]


def test_attribution_is_per_node_share() -> None:
    """Each node's cost splits by its own NPU seconds; an idle node is nobody's."""
    ledger = CostLedger()
    base = [node("n1", ModelSample("a")), node("n2", ModelSample("b")), node("n3")]
    account(ledger, INPUTS, base, 0.0)
    live = account(
        ledger,
        INPUTS,
        [
            node("n1", ModelSample("a", "", 1.0, 10)),  # a: whole of n1 for 1 s of work
            node("n2", ModelSample("b", "", 50.0, 10)),  # b: whole of n2 for 50 s
            node("n3"),
        ],
        100.0,
    )
    one = nameplate_window_usd(100)
    assert live.models["a"].window_usd == one
    assert live.models["b"].window_usd == one
    assert live.window_usd == 3 * one
    assert live.idle_usd == one


def test_counter_reset_counts_the_current_value() -> None:
    ledger = CostLedger()
    account(ledger, INPUTS, [node("n1", ModelSample("a", "1", 100.0, 1000))], 0.0)
    live = account(ledger, INPUTS, [node("n1", ModelSample("a", "1", 110.0, 1100))], 10.0)
    assert live.models["a"].window_inferences == 100
    assert live.models["a"].window_compute_seconds == 10
    # The agent restarted: counters began again from zero and now read 7 s / 70.
    live = account(ledger, INPUTS, [node("n1", ModelSample("a", "1", 7.0, 70))], 20.0)
    assert live.models["a"].window_inferences == 70
    assert live.models["a"].window_compute_seconds == 7
    assert live.models["a"].total_inferences == 170
    # A model (re)loaded between ticks on a known node: its whole count is new work.
    live = account(
        ledger,
        INPUTS,
        [node("n1", ModelSample("a", "1", 8.0, 80), ModelSample("b", "1", 2.0, 5))],
        30.0,
    )
    assert live.models["a"].window_inferences == 10
    assert live.models["b"].window_inferences == 5


def test_restart_detected_by_start_time_even_when_counters_grew_past_the_old_value() -> None:
    ledger = CostLedger()
    account(ledger, INPUTS, [node("n1", ModelSample("a", "", 5.0, 50), agent_started_at=1.0)], 0)
    live = account(
        ledger, INPUTS, [node("n1", ModelSample("a", "", 9.0, 90), agent_started_at=2.0)], 10
    )
    assert live.models["a"].window_inferences == 90


def test_nameplate_when_nothing_is_measured() -> None:
    ledger = CostLedger()
    account(ledger, INPUTS, [node("n1", ModelSample("a"))], 0.0)
    live = account(ledger, INPUTS, [node("n1", ModelSample("a", "", 1.0, 1))], 3600.0)
    assert live.energy_source == "nameplate"
    assert live.window_usd == nameplate_window_usd(3600)
    assert live.per_device_year_usd == DEVICE.total_usd_per_year
    assert live_pool_cost(live).energy_source == "nameplate"


def test_measured_watts_replace_nameplate() -> None:
    ledger = CostLedger()
    account(ledger, INPUTS, [node("n1", watts=4.0)], 0.0)
    live = account(ledger, INPUTS, [node("n1", watts=6.0)], 3600.0)
    assert live.energy_source == "measured"
    fixed = DEVICE.fixed_usd_per_year * 3600 / SECONDS_PER_YEAR
    energy = D(5) * 3600 / 3_600_000 * D("0.12")  # mean 5 W for an hour at $0.12/kWh
    assert live.window_usd == fixed + energy
    # annualised: 5 W instead of the 10 W nameplate
    assert live.per_device_year_usd == DEVICE.fixed_usd_per_year + D(5) * 8760 / 1000 * D("0.12")
    assert live_pool_cost(live).energy_source == "measured"


def test_measured_energy_joules_replace_nameplate() -> None:
    ledger = CostLedger()
    account(ledger, INPUTS, [node("n1", ModelSample("a", "", 0.0, 0, 0.0))], 0.0)
    live = account(ledger, INPUTS, [node("n1", ModelSample("a", "", 10.0, 100, 360.0))], 3600.0)
    assert live.energy_source == "measured"
    fixed = DEVICE.fixed_usd_per_year * 3600 / SECONDS_PER_YEAR
    assert live.window_usd == fixed + D(360) / 3_600_000 * D("0.12")
    # once a node has reported energy, an idle window is a measured zero, not nameplate
    live = account(ledger, INPUTS, [node("n1", ModelSample("a", "", 10.0, 100, 360.0))], 7200.0)
    assert live.energy_source == "measured"
    assert live.window_usd == fixed


def test_mixed_pool_says_nameplate() -> None:
    ledger = CostLedger()
    account(ledger, INPUTS, [node("n1", watts=3.0), node("n2")], 0.0)
    live = account(ledger, INPUTS, [node("n1", watts=3.0), node("n2")], 60.0)
    assert live.energy_source == "nameplate"


def test_cloud_fallback_spend_and_resets() -> None:
    ledger = CostLedger()
    account(ledger, INPUTS, [node("n1", cloud_fallback_requests={"a": 100})], 0.0)
    live = account(ledger, INPUTS, [node("n1", cloud_fallback_requests={"a": 300, "b": 40})], 1)
    assert live.cloud_fallback_requests == 240
    assert live.cloud_fallback_spend_usd == D(240) * D("0.50") / 1000
    live = account(ledger, INPUTS, [node("n1", cloud_fallback_requests={"a": 60, "b": 40})], 2)
    assert live.cloud_fallback_requests == 300  # reset: the 60 since restart count
    assert live.window_cloud_fallback_usd == D(60) * D("0.0005")
    assert live_pool_cost(live).cloud_fallback_spend_usd == 0.15
    assert live.cloud_per_1k_usd == D("0.5")
    # break-even: a device-year over (cloud price x 365)
    assert live.break_even_per_device_day == live.per_device_year_usd / (D("0.0005") * 365)


def test_down_node_accrues_fixed_cost_and_keeps_its_counters() -> None:
    ledger = CostLedger()
    account(ledger, INPUTS, [node("n1", ModelSample("a", "", 10.0, 100))], 0.0)
    live = account(ledger, INPUTS, [NodeSample("n1", up=False)], 60.0)
    assert live.window_usd == nameplate_window_usd(60)
    assert live.idle_usd == live.window_usd
    live = account(ledger, INPUTS, [node("n1", ModelSample("a", "", 12.0, 120))], 120.0)
    assert live.models["a"].window_inferences == 20


def test_shared_ops_spread_over_nodes() -> None:
    inputs = PoolCostInputs(shared_ops_usd_per_year=D("3153.6"))
    ledger = CostLedger()
    account(ledger, inputs, [node("n1"), node("n2")], 0.0)
    live = account(ledger, inputs, [node("n1"), node("n2")], 10_000.0)
    shared = D("3153.6") * 10_000 / SECONDS_PER_YEAR
    assert abs(live.window_usd - (2 * nameplate_window_usd(10_000) + shared)) < D("1e-20")
    assert live.fleet_per_year_usd == 2 * DEVICE.total_usd_per_year + D("3153.6")


def test_adapters_from_api_and_inventory() -> None:
    pool = InferencePool.model_validate(
        {
            "metadata": {"name": "p"},
            "spec": {
                "cost": {"watts": 7, "sharedOpsUsdPerYear": 100},
                "cloudFallback": {"endpoint": "cloud:443", "pricePer1kUsd": 0.4},
            },
        }
    )
    inputs = pool_cost_inputs(pool)
    assert inputs.device.watts == 7
    assert inputs.shared_ops_usd_per_year == 100
    assert inputs.cloud_usd_per_1k == D("0.4")
    obs = ModelObs(
        "m", "1", ModelState.READY, compute_seconds=1.5, inference_count=3, energy_joules=0.5
    )
    samples = node_samples(
        [NodeState("n1", "a:1", up=True, models=(obs,), watts=2.0)], {"n1": {"m": 4}}
    )
    assert samples[0].models[0] == ModelSample("m", "1", 1.5, 3, 0.5)
    assert samples[0].watts == 2.0
    assert samples[0].cloud_fallback_requests == {"m": 4}


def test_cloud_counters_probed_from_nodestatus_reach_the_pool_spend() -> None:
    """NodeStatus carries the agent's cloud counters: the ledger prices them, so status shows
    the spend the agents' /metrics show."""
    from hatswarm_agent.protocol.v1 import control_pb2
    from hatswarm_operator.control.converters import node_report
    from hatswarm_operator.core.inventory import observe

    status = control_pb2.NodeStatusResponse(node_name="n1", cloud_requests={"m": 250})
    node = observe(NodeState("n1", "a:1"), node_report(status), 0.0, 3)
    assert node.cloud_requests == (("m", 250),)
    ledger = CostLedger()
    inputs = PoolCostInputs(cloud_usd_per_1k=D("0.4"))
    account(ledger, inputs, node_samples([node]), 0)
    status.cloud_requests["m"] = 1250
    node = observe(node, node_report(status), 1.0, 3)
    live = account(ledger, inputs, node_samples([node]), 1)
    assert live.cloud_fallback_requests == 1000
    assert live.cloud_fallback_spend_usd == D("0.4")


def test_gauges() -> None:
    registry = CollectorRegistry()
    metrics = CostMetrics(registry)
    model = EdgeModel.model_validate(
        {
            "metadata": {"name": "detector"},
            "spec": {
                "pool": "p",
                "version": "1",
                "artifacts": [
                    {"accelerator": "cpu", "format": "onnx", "uri": "file:///m", "sha256": "0" * 64}
                ],
                "costAttribution": {"team": "vision", "customer": "acme"},
            },
        }
    )
    ledger = CostLedger()
    account(ledger, INPUTS, [node("n1", ModelSample("detector"), cloud_fallback_requests={})], 0)
    live = account(
        ledger,
        INPUTS,
        [node("n1", ModelSample("detector", "", 10.0, 1000), cloud_fallback_requests={"x": 10})],
        60,
    )
    metrics.publish("p", live, showback_of([model]))
    text = generate_latest(registry).decode()
    for name in METRIC_NAMES:
        assert f"\n{name}{{" in text or text.startswith(f"{name}{{") or f"{name}{{" in text
    labels = 'customer="acme",model="detector",pool="p",product_line="",team="vision"'
    value = registry.get_sample_value(
        "hatswarm_cost_usd_total",
        {
            "pool": "p",
            "model": "detector",
            "team": "vision",
            "customer": "acme",
            "product_line": "",
        },
    )
    assert value == pytest.approx(float(nameplate_window_usd(60)))
    assert labels in text
    # One cloud-spend series, the agents' hatswarm_cloud_fallback_cost_usd_total: none here.
    assert "cloud_fallback" not in text
    metrics.forget_model("p", "detector")
    assert "detector" not in generate_latest(registry).decode()


def test_tokens_are_counted_by_delta_and_cloud_tokens_priced() -> None:
    from hatswarm_operator.finops.tokens import TokenPrices

    inputs = PoolCostInputs(cloud_tokens=TokenPrices(D(3), D(15)))
    chat = ModelSample("chat", "1", compute_seconds=0.0)
    ledger = CostLedger()
    first = {("chat", "prompt", "edge"): 500, ("chat", "prompt", "cloud"): 1000}
    account(ledger, inputs, [node("n1", chat, tokens=first)], 0.0)  # baseline, not charged
    later = {
        ("chat", "prompt", "edge"): 1500,
        ("chat", "completion", "edge"): 400,
        ("chat", "prompt", "cloud"): 3000,
        ("chat", "completion", "cloud"): 100,
    }
    busy = ModelSample("chat", "1", compute_seconds=30.0, inference_count=10)
    live = account(ledger, inputs, [node("n1", busy, tokens=later)], 60.0)
    assert live.tokens == {
        ("chat", "prompt", "edge"): 1000,
        ("chat", "completion", "edge"): 400,
        ("chat", "prompt", "cloud"): 2000,
        ("chat", "completion", "cloud"): 100,
    }
    spend = (D(2000) * 3 + D(100) * 15) / 1_000_000
    assert live.cloud_token_spend_usd == spend
    assert live.cloud_fallback_spend_usd == spend  # no per-request price: tokens only
    # The node's whole minute went to chat (the only model with compute seconds).
    assert live.edge_per_1m_tokens_usd == live.models["chat"].total_usd / 1400 * 1_000_000
    status = live_pool_cost(live)
    assert status.edge_tokens == 1400 and status.cloud_tokens == 2100
    assert status.cloud_per1m_input_usd == 3.0 and status.cloud_per1m_output_usd == 15.0
    assert status.cloud_token_spend_usd == 0.0075
    wire = status.model_dump(by_alias=True, exclude_none=True)
    assert wire["cloudPer1MInputUsd"] == 3.0 and "edgePer1MTokensUsd" in wire
    # The EdgeModel's own share: its edge and cloud tokens, the cloud's priced.
    assert live_model_tokens(live) == {
        "chat": ModelTokens(edge_tokens=1400, cloud_tokens=2100, cloud_token_spend_usd=0.0075)
    }
    # An agent restart: counters start over, the new values are the whole delta.
    restarted = {("chat", "prompt", "cloud"): 10}
    live = account(ledger, inputs, [node("n1", busy, tokens=restarted, agent_started_at=5.0)], 61)
    assert live.tokens[("chat", "prompt", "cloud")] == 2010


def test_pool_without_generations_has_no_token_status() -> None:
    live = account(CostLedger(), INPUTS, [node("n1")], 0.0)
    status = live_pool_cost(live)
    assert status.edge_tokens is None and status.cloud_per1m_input_usd is None


def test_token_prices_come_from_the_pools_openai_cloud() -> None:
    pool = InferencePool.model_validate(
        {
            "metadata": {"name": "p"},
            "spec": {
                "cloudFallback": {
                    "openai": {
                        "baseUrl": "https://api.example.com/v1",
                        "model": "small",
                        "pricePer1MInputUsd": 0.15,
                        "pricePer1MOutputUsd": 0.6,
                    }
                }
            },
        }
    )
    inputs = pool_cost_inputs(pool)
    assert inputs.cloud_tokens is not None
    assert inputs.cloud_tokens.blended_per_1m_usd(D("0.5")) == D("0.375")
    with pytest.raises(ValueError, match="needs an endpoint"):
        InferencePool.model_validate({"spec": {"cloudFallback": {"maxShare": 0.2}}})


def test_node_status_tokens_reach_the_ledger() -> None:
    """The probe path: NodeStatus.tokens -> NodeReport -> NodeState -> NodeSample."""
    from hatswarm_agent.protocol.v1 import control_pb2
    from hatswarm_operator.control.converters import node_report
    from hatswarm_operator.core.inventory import observe

    status = control_pb2.NodeStatusResponse(
        tokens=[
            control_pb2.TokenCount(model="chat", kind="prompt", where="cloud", tokens=600),
            control_pb2.TokenCount(model="chat", kind="completion", where="edge", tokens=40),
        ]
    )
    state = observe(NodeState("n1", "10.0.0.1:8001"), node_report(status), 1.0, 3)
    (sample,) = node_samples([state])
    assert sample.tokens == {("chat", "completion", "edge"): 40, ("chat", "prompt", "cloud"): 600}


def test_model_tokens_without_cloud_prices_leave_the_spend_unset() -> None:
    ledger = CostLedger()
    chat = ModelSample("chat", "1", compute_seconds=0.0)
    account(ledger, INPUTS, [node("n1", chat, tokens={})], 0.0)
    counts = {("chat", "prompt", "edge"): 7, ("chat", "completion", "cloud"): 5}
    live = account(ledger, INPUTS, [node("n1", chat, tokens=counts)], 1.0)
    assert live_model_tokens(live) == {
        "chat": ModelTokens(edge_tokens=7, cloud_tokens=5, cloud_token_spend_usd=None)
    }
