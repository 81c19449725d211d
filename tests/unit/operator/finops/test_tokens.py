"""FinOps per token on plain data: the seed's example restated in tokens, prices, break-even."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hatswarm_operator.finops.tco import (
    DeviceCostInputs,
    cost_per_inference,
    device_annual_cost,
    inferences_per_year_from_rate,
)
from hatswarm_operator.finops.tokens import (
    DEFAULT_TOKENS_PER_INFERENCE,
    TokenPrices,
    break_even_tokens_per_device_day,
    cloud_token_spend,
    inferences_per_second,
    per_1m_tokens_usd,
    sum_tokens,
    token_cost,
    tokens_per_year_from_rate,
)

D = Decimal
SEED_YEAR = device_annual_cost(DeviceCostInputs()).total_usd_per_year  # 138.85 (seed: 138.84)


def test_the_seeds_3b_example_as_tokens_keeps_its_figures() -> None:
    """1 inference/s at the default 100 tokens per inference is 100 tokens/s."""
    assert DEFAULT_TOKENS_PER_INFERENCE == 100
    t = token_cost(SEED_YEAR, 100)
    assert t.inferences_per_s == 1
    per_inference = cost_per_inference(SEED_YEAR, inferences_per_year_from_rate(t.inferences_per_s))
    assert round(per_inference, 7) == D("0.0000044")  # the seed's figure
    assert t.tokens_per_device_year == 3_153_600_000
    assert t.tokens_per_device_day == 8_640_000
    # per 1M tokens = per inference x 1M / 100 tokens
    assert t.edge_per_1m_usd == per_inference * 1_000_000 / 100
    assert round(t.edge_per_1m_usd, 5) == D("0.04403")


def test_the_seeds_slow_case_one_inference_per_five_seconds() -> None:
    t = token_cost(SEED_YEAR, 20)  # 100 tokens every 5 s
    per_inference = cost_per_inference(SEED_YEAR, D(6_307_200))
    assert round(per_inference, 6) == D("0.000022")  # the seed's figure
    assert t.edge_per_1m_usd == per_inference * 10_000
    assert round(t.edge_per_1m_usd, 4) == D("0.2201")


def test_tokens_per_inference_is_an_assumption_not_a_constant() -> None:
    t = token_cost(SEED_YEAR, 100, tokens_per_inference=250)
    assert t.inferences_per_s == D("0.4")
    assert t.edge_per_1m_usd == token_cost(SEED_YEAR, 100).edge_per_1m_usd  # tokens are tokens


def test_cloud_prices_blend_by_prompt_share_and_meet_the_edge_at_break_even() -> None:
    prices = TokenPrices(D("0.15"), D("0.60"))
    assert prices.blended_per_1m_usd(D("0.5")) == D("0.375")
    assert prices.blended_per_1m_usd(1) == D("0.15")
    assert prices.cost_usd(600, 6) == D("0.0000936")  # 600 x 0.15/1M + 6 x 0.60/1M
    t = token_cost(SEED_YEAR, D("8.3"), cloud=prices)  # Hailo's published Qwen2-1.5B rate
    assert t.cloud_per_1m_usd == D("0.375")
    be = t.break_even_tokens_per_device_day
    assert be is not None
    # At break-even a device-day of tokens costs what the cloud charges for them.
    assert pytest.approx(be * D("0.375") / 1_000_000) == SEED_YEAR / 365
    assert t.tokens_per_device_day < be  # one Pi at 8.3 tok/s does not reach it
    assert t.edge_per_1m_usd > t.cloud_per_1m_usd  # so the cloud is cheaper per token there
    assert t.cloud_per_inference_usd == D("0.375") * 100 / 1_000_000


def test_break_even_and_rates_are_exact() -> None:
    assert tokens_per_year_from_rate(1) == 31_536_000
    assert inferences_per_second(300, 100) == 3
    assert per_1m_tokens_usd(D(100), D(50_000_000)) == 2
    assert break_even_tokens_per_device_day(D(365), D(1)) == 1_000_000


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: token_cost(SEED_YEAR, 0), "tokens_per_s must be > 0"),
        (lambda: token_cost(SEED_YEAR, 5, tokens_per_inference=0), "tokens_per_inference"),
        (lambda: token_cost(SEED_YEAR, 5, prompt_share=D("1.5")), "prompt_share"),
        (lambda: TokenPrices(D(-1), D(1)), "input_per_1m_usd must be >= 0"),
        (lambda: break_even_tokens_per_device_day(1, 0), "cloud price per 1M tokens"),
    ],
)
def test_bad_input_names_what_is_wrong(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_counting_and_cloud_spend() -> None:
    counts = {
        ("chat", "prompt", "edge"): 1000,
        ("chat", "completion", "edge"): 200,
        ("chat", "prompt", "cloud"): 4_000_000,
        ("chat", "completion", "cloud"): 1_000_000,
        ("summary", "prompt", "cloud"): 1_000_000,
    }
    assert sum_tokens(counts, where="edge") == 1200
    assert sum_tokens(counts, model="chat", kind="prompt") == 4_001_000
    spend = cloud_token_spend(counts, TokenPrices(D("0.15"), D("0.60")))
    assert spend == D("0.15") * 5 + D("0.60") * 1
