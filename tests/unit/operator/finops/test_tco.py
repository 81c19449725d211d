"""The cost model against the seed article's worked examples and its own invariants."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hatswarm_operator.finops.tco import (
    DeviceCostInputs,
    ModelUsage,
    attribute_node_cost,
    blended_cost,
    break_even_per_device_day,
    cloud_fallback_spend,
    cloud_per_inference_from_hourly,
    cloud_per_inference_from_per_1k,
    cost_per_inference,
    device_annual_cost,
    fleet_annual_cost,
    inferences_per_year_from_daily,
    inferences_per_year_from_rate,
    integrate_watts,
    node_window_cost,
    window_energy,
)
from hypothesis import given
from hypothesis import strategies as st

D = Decimal

# The seed rounds its parts (68.33 + 10.51 + 60) before summing; exact sums may differ by
# a cent per rounded part.
SEED_ROUNDING = D("0.02")


def kiosk_inputs() -> DeviceCostInputs:
    """The seed's 200-kiosk case: $60/year connectivity, management in shared ops."""
    return DeviceCostInputs(mgmt_usd_per_device_year=D(0), connectivity_usd_per_device_year=D(60))


class TestSeedSingleDevice:
    def test_components_match_the_article(self) -> None:
        cost = device_annual_cost(DeviceCostInputs())
        assert round(cost.capex_usd_per_year, 2) == D("68.33")
        assert round(cost.energy_usd_per_year, 2) == D("10.51")
        assert cost.energy_kwh_per_year == D("87.6")
        assert cost.mgmt_usd_per_year == D(60)

    def test_total_agrees_with_138_84_within_rounding(self) -> None:
        total = device_annual_cost(DeviceCostInputs()).total_usd_per_year
        assert abs(total - D("138.84")) <= SEED_ROUNDING
        # exact: 205/3 + 0.01 * 8760 * 0.12 + 60
        assert total == D(205) / 3 + D("10.512") + 60

    def test_per_inference_at_one_per_second(self) -> None:
        total = device_annual_cost(DeviceCostInputs()).total_usd_per_year
        volume = inferences_per_year_from_rate(1)
        assert volume == 31_536_000
        assert round(cost_per_inference(total, volume), 7) == D("0.0000044")

    def test_per_inference_at_one_per_five_seconds(self) -> None:
        total = device_annual_cost(DeviceCostInputs()).total_usd_per_year
        volume = inferences_per_year_from_rate(D("0.2"))
        assert volume == 6_307_200
        assert round(cost_per_inference(total, volume), 6) == D("0.000022")


class TestSeedKioskFleet:
    def test_lines_of_the_tco(self) -> None:
        fleet = fleet_annual_cost(kiosk_inputs(), 200, 40_000)
        assert round(fleet.capex_usd_per_year) == 13_667
        assert fleet.connectivity_usd_per_year == 12_000
        assert fleet.shared_ops_usd_per_year == 40_000
        assert abs(fleet.energy_usd_per_year - 2_100) < 5  # seed: "about $2,100"

    def test_total_and_per_kiosk(self) -> None:
        fleet = fleet_annual_cost(kiosk_inputs(), 200, 40_000)
        # the seed took energy as $2,100 instead of 200 x $10.512 = $2,102.40
        assert abs(fleet.total_usd_per_year - 67_767) <= D("2.4")
        assert round(fleet.per_device_usd_per_year) == 339

    def test_per_inference_at_1000_a_day(self) -> None:
        fleet = fleet_annual_cost(kiosk_inputs(), 200, 40_000)
        volume = inferences_per_year_from_daily(1000)
        assert volume == 365_000
        per = cost_per_inference(fleet.per_device_usd_per_year, volume)
        assert round(per, 5) == D("0.00093")
        assert per < D("0.001")  # the seed's conclusion: edge wins against $0.001 in the cloud

    def test_shared_ops_is_spread_over_devices(self) -> None:
        small = fleet_annual_cost(kiosk_inputs(), 10, 40_000)
        large = fleet_annual_cost(kiosk_inputs(), 1000, 40_000)
        assert small.per_device_usd_per_year - large.per_device_usd_per_year == D(4000) - 40


class TestCloud:
    def test_hourly_price_over_throughput(self) -> None:
        assert cloud_per_inference_from_hourly(D("3.6"), 3600) == D("0.001")

    def test_per_1k(self) -> None:
        assert cloud_per_inference_from_per_1k(D("0.5")) == D("0.0005")

    @given(
        per_device_year=st.decimals(min_value=1, max_value=100_000, places=2),
        cloud_per_1k=st.decimals(min_value=D("0.001"), max_value=100, places=3),
    )
    def test_edge_equals_cloud_at_break_even(
        self, per_device_year: Decimal, cloud_per_1k: Decimal
    ) -> None:
        cloud = cloud_per_inference_from_per_1k(cloud_per_1k)
        volume_per_day = break_even_per_device_day(per_device_year, cloud)
        assert volume_per_day is not None
        edge = cost_per_inference(per_device_year, inferences_per_year_from_daily(volume_per_day))
        assert abs(edge - cloud) <= cloud * D("1e-20")
        # either side of the break-even, the cheaper option flips
        double, half = volume_per_day * 2, volume_per_day / 2
        above = cost_per_inference(per_device_year, inferences_per_year_from_daily(double))
        below = cost_per_inference(per_device_year, inferences_per_year_from_daily(half))
        assert below > cloud > above

    def test_seed_kiosk_break_even_against_a_tenth_of_a_cent(self) -> None:
        fleet = fleet_annual_cost(kiosk_inputs(), 200, 40_000)
        volume = break_even_per_device_day(fleet.per_device_usd_per_year, D("0.001"))
        assert volume is not None
        assert round(volume, 2) == D("928.34")

    def test_free_cloud_has_no_break_even(self) -> None:
        assert break_even_per_device_day(D(100), D(0)) is None

    def test_blended_keeps_whole_edge_cost_and_adds_the_cloud_share(self) -> None:
        blend = blended_cost(D(1000), D(1_000_000), D("0.25"), D("0.002"))
        assert blend.cloud_usd_per_year == D(500)
        assert blend.total_usd_per_year == D(1500)
        assert blend.per_inference_usd == D("0.0015")

    def test_blended_share_bounds(self) -> None:
        with pytest.raises(ValueError, match="cloud_share"):
            blended_cost(D(1), D(1), D("1.5"), D(1))

    def test_fallback_spend(self) -> None:
        assert cloud_fallback_spend(12_345, D("0.4")) == D("4.938")
        assert cloud_fallback_spend(0, D("0.4")) == 0


class TestAttribution:
    def test_pays_by_compute_seconds_not_requests(self) -> None:
        # the detector served fewer requests but held the NPU three times as long
        result = attribute_node_cost(
            D(40),
            [
                ModelUsage("yolov8s", D(300), inferences=1_000),
                ModelUsage("mobilenet", D(100), inferences=9_000),
            ],
        ).by_model()
        assert result["yolov8s"].usd == 3 * result["mobilenet"].usd
        assert result["yolov8s"].usd + result["mobilenet"].usd == D(40)
        assert result["yolov8s"].per_1k_inferences_usd == D(30)
        assert result["mobilenet"].per_1k_inferences_usd == D(10) * 1000 / 9000

    def test_capacity_leaves_idle_cost_visible(self) -> None:
        attribution = attribute_node_cost(
            D(100), [ModelUsage("a", D(30)), ModelUsage("b", D(10))], capacity_seconds=D(100)
        )
        by = attribution.by_model()
        assert by["a"].usd == D(30)
        assert by["b"].usd == D(10)
        assert attribution.idle_usd == D(60)
        assert by["a"].per_1k_inferences_usd is None

    def test_repeated_model_entries_merge(self) -> None:
        result = attribute_node_cost(
            D(10), [ModelUsage("a", D(1), 5), ModelUsage("a", D(3), 5), ModelUsage("b", D(4))]
        ).by_model()
        assert result["a"].compute_seconds == D(4)
        assert result["a"].inferences == 10
        assert result["a"].usd == D(5)

    def test_more_busy_than_capacity_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="capacity"):
            attribute_node_cost(D(1), [ModelUsage("a", D(11))], capacity_seconds=D(10))

    def test_idle_node_without_capacity_attributes_nothing(self) -> None:
        attribution = attribute_node_cost(D(5), [ModelUsage("a", D(0))])
        assert attribution.by_model()["a"].usd == 0
        assert attribution.idle_usd == D(5)


class TestEnergy:
    def test_trapezoid_integration(self) -> None:
        # 10 W for 10 s, then a ramp to 20 W over 10 s: 100 J + 150 J
        assert integrate_watts([(0, 10), (10, 10), (20, 20)]) == D(250)

    def test_nan_samples_are_skipped(self) -> None:
        assert integrate_watts([(0, 5), (5, float("nan")), (10, 5)]) == D(50)

    def test_nameplate_when_nothing_measured(self) -> None:
        energy = window_energy(3600, 10, D("0.12"))
        assert energy.source == "nameplate"
        assert energy.kwh == D("0.01")
        assert energy.usd == D("0.0012")

    def test_measured_samples_replace_nameplate(self) -> None:
        # the node actually draws 6 W, not its 10 W nameplate
        samples = [(float(t), 6.0) for t in range(0, 3600, 15)]
        energy = window_energy(3600, 10, D("0.12"), watt_samples=samples)
        assert energy.source == "measured"
        assert energy.kwh == D("0.006")

    def test_measured_joules_take_precedence(self) -> None:
        energy = window_energy(
            3600, 10, D("0.12"), watt_samples=[(0, 8.0), (10, 8.0)], measured_joules=D(7_200_000)
        )
        assert energy.source == "measured"
        assert energy.kwh == D(2)
        assert energy.usd == D("0.24")

    def test_single_sample_falls_back_to_nameplate(self) -> None:
        assert window_energy(60, 10, 1, watt_samples=[(0, 3.0)]).source == "nameplate"

    def test_node_window_cost_uses_measured_energy(self) -> None:
        inputs = DeviceCostInputs()
        year = 365 * 24 * 3600
        nameplate = node_window_cost(inputs, year)
        assert nameplate.total_usd == device_annual_cost(inputs).total_usd_per_year
        measured = node_window_cost(inputs, year, measured_joules=D(5) * year)  # 5 W average
        assert measured.energy.source == "measured"
        assert nameplate.total_usd - measured.total_usd == D("5.256")  # half of $10.512


class TestValidation:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"device_price_usd": D(-1)},
            {"lifespan_years": D(0)},
            {"watts": D("-0.1")},
            {"electricity_usd_per_kwh": D(-1)},
        ],
    )
    def test_bad_inputs_are_rejected(self, kwargs: dict[str, Decimal]) -> None:
        with pytest.raises(ValueError, match="must be"):
            DeviceCostInputs(**kwargs)

    def test_floats_are_taken_at_face_value(self) -> None:
        inputs = DeviceCostInputs(electricity_usd_per_kwh=0.12)  # type: ignore[arg-type]
        assert inputs.electricity_usd_per_kwh == D("0.12")

    def test_zero_volume_has_no_cost_per_inference(self) -> None:
        with pytest.raises(ValueError, match="inferences_per_year"):
            cost_per_inference(D(1), D(0))
