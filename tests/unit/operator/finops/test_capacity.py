"""Capacity planning: N+K devices from measured FPS, a utilisation ceiling and p99 SLOs."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hatswarm_operator.finops.capacity import (
    AcceleratorKind,
    ModelLoad,
    mm1_max_utilisation,
    plan_capacity,
    plan_kind,
)
from hatswarm_operator.finops.tco import DeviceCostInputs, cloud_per_inference_from_per_1k
from hypothesis import given
from hypothesis import strategies as st

D = Decimal

# hailo_model_zoo v2.18, batch 1 (DESIGN.md)
HAILO_8L = AcceleratorKind(
    "hailo-8l", {"yolov8s": D(110), "resnet_v1_50": D(138)}, DeviceCostInputs(hat_price_usd=D(70))
)
HAILO_8 = AcceleratorKind(
    "hailo-8", {"yolov8s": D(491), "resnet_v1_50": D(1372)}, DeviceCostInputs(hat_price_usd=D(110))
)


def test_n_plus_k_with_failures() -> None:
    # 231 req/s of yolov8s on 110 fps devices = 2.1 busy devices; at <= 70% that is 3 serving
    load = [ModelLoad("yolov8s", D(231))]
    for k in (0, 1, 2):
        plan = plan_kind(load, HAILO_8L, max_utilisation=D("0.7"), failures=k)
        assert plan.busy_devices == D("2.1")
        assert plan.serving_devices == 3
        assert plan.devices == 3 + k
        assert plan.utilisation_after_failures == D("0.7")
        assert plan.feasible


def test_exact_fit_does_not_add_a_device() -> None:
    plan = plan_kind([ModelLoad("yolov8s", D(77))], HAILO_8L, max_utilisation=0.7, failures=0)
    assert plan.serving_devices == 1


def test_mixed_models_add_their_npu_time() -> None:
    load = [ModelLoad("yolov8s", D(55)), ModelLoad("resnet_v1_50", D(69))]
    plan = plan_kind(load, HAILO_8L, max_utilisation=1, failures=0)
    assert plan.busy_devices == D(1)  # half a device each
    assert plan.serving_devices == 1


def test_faster_kind_needs_fewer_devices() -> None:
    load = [ModelLoad("yolov8s", D(900))]
    plans = {p.kind: p for p in plan_capacity(load, [HAILO_8L, HAILO_8], failures=1).plans}
    assert plans["hailo-8l"].devices == 13  # ceil(900/110/0.7) = 12, + 1
    assert plans["hailo-8"].devices == 4  # ceil(900/491/0.7) = 3, + 1


def test_plans_are_costed_and_cheapest_is_chosen() -> None:
    load = [ModelLoad("yolov8s", D(900))]
    cloud = cloud_per_inference_from_per_1k(D("0.05"))
    capacity = plan_capacity(
        load,
        [HAILO_8L, HAILO_8],
        failures=1,
        cloud_per_inference_usd=cloud,
        shared_ops_usd_per_year=0,
    )
    plans = {p.kind: p for p in capacity.plans}
    eight = plans["hailo-8"]
    # 4 devices of (75 + 110) / 3 + 10.512 + 60
    assert eight.edge_usd_per_year == 4 * (D(185) / 3 + D("10.512") + 60)
    assert eight.inferences_per_year == 900 * 31_536_000
    assert eight.cloud_usd_per_year == 900 * 31_536_000 * D("0.00005")
    assert eight.savings_vs_cloud_usd_per_year == eight.cloud_usd_per_year - eight.edge_usd_per_year
    assert eight.per_inference_usd == eight.edge_usd_per_year / eight.inferences_per_year
    assert capacity.cheapest is eight


def test_kind_without_a_measured_model_is_infeasible() -> None:
    only_yolo = AcceleratorKind("yolo-only", {"yolov8s": D(110)})
    plan = plan_kind([ModelLoad("yolov8s", D(10)), ModelLoad("bert", D(1))], only_yolo)
    assert plan.unserved == ("bert",)
    assert not plan.feasible
    capacity = plan_capacity([ModelLoad("bert", D(1))], [only_yolo])
    assert capacity.cheapest is None


def test_p99_slo_lowers_the_ceiling() -> None:
    # yolov8s on a Hailo-8L: 1/110 s per frame; 100 ms p99 -> M/M/1 bound 1 - ln(100)/11
    bound = mm1_max_utilisation(D(1) / 110, D("0.1"))
    assert float(bound) == pytest.approx(1 - math.log(100) / 11, rel=1e-12)
    slo = plan_kind([ModelLoad("yolov8s", D(231), D("0.1"))], HAILO_8L, failures=1)
    assert slo.max_utilisation == bound
    assert slo.serving_devices == math.ceil(2.1 / float(bound))  # 4, not 3
    assert slo.utilisation_after_failures <= bound


def test_slo_shorter_than_one_inference_cannot_be_met() -> None:
    plan = plan_kind([ModelLoad("yolov8s", D(1), D("0.005"))], HAILO_8L)
    assert plan.unserved == ("yolov8s",)


def test_no_load_needs_no_devices() -> None:
    plan = plan_kind([ModelLoad("yolov8s", D(0))], HAILO_8L, failures=2)
    assert plan.devices == 0
    assert plan.per_inference_usd is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"max_utilisation": 0}, "max_utilisation"), ({"failures": -1}, "failures")],
)
def test_bad_parameters(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_kind([ModelLoad("yolov8s", D(1))], HAILO_8L, **kwargs)  # type: ignore[arg-type]


@given(
    rps=st.decimals(min_value=D("0.1"), max_value=5000, places=1),
    ceiling=st.decimals(min_value=D("0.1"), max_value=1, places=2),
    failures=st.integers(min_value=0, max_value=3),
)
def test_survives_k_failures_and_is_minimal(rps: Decimal, ceiling: Decimal, failures: int) -> None:
    plan = plan_kind(
        [ModelLoad("yolov8s", rps)], HAILO_8L, max_utilisation=ceiling, failures=failures
    )
    # with K nodes down the rest stay within the ceiling ...
    assert plan.busy_devices / (plan.devices - failures) <= ceiling
    # ... and one node fewer would not
    if plan.serving_devices > 1:
        assert plan.busy_devices / (plan.serving_devices - 1) > ceiling
