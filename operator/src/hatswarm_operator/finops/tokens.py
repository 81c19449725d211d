"""FinOps per token, pure: the seed's device TCO divided by the tokens a device generates.

A generative model's volume is tokens, not inferences: the edge cost per 1M tokens is a
device's annual cost (:func:`tco.device_annual_cost`, with its share of shared ops) over the
tokens it processes in a year at its measured tokens/s. The cloud prices input (prompt) and
output (completion) tokens separately, so its price per 1M tokens depends on the mix: blended by
the prompt share of the tokens. The two meet at a break-even volume in tokens per device and day.

The seed states its example in inferences ("a small 3B-equivalent quantized model gives 1
inference per second", $138.84 a year, $0.0000044 per inference); as tokens it needs a
tokens-per-inference assumption (:data:`DEFAULT_TOKENS_PER_INFERENCE`, a flag of
``hatswarm cost``): at 100 tokens per inference, 100 tokens/s is the seed's 1 inference/s, and
its figures come out unchanged, with $0.044 per 1M tokens beside them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from hatswarm_operator.finops.money import Number, to_decimal
from hatswarm_operator.finops.tco import DAYS_PER_YEAR, SECONDS_PER_YEAR

MILLION = Decimal(1_000_000)
DEFAULT_TOKENS_PER_INFERENCE = Decimal(100)
"""Prompt + completion tokens of one inference (a short chat turn or an intent + reply)."""
DEFAULT_PROMPT_SHARE = Decimal("0.5")
"""Share of tokens that are prompt (input) tokens, for blending the cloud's two prices."""

PROMPT = "prompt"
COMPLETION = "completion"
EDGE = "edge"
CLOUD = "cloud"

TokenKey = tuple[str, str, str]
"""(model, kind, where): kind "prompt" or "completion", where "edge" or "cloud"."""


def _positive(name: str, value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _fraction(name: str, value: Decimal) -> Decimal:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


@dataclass(frozen=True)
class TokenPrices:
    """A cloud's prices per 1M input and output tokens in USD."""

    input_per_1m_usd: Decimal
    output_per_1m_usd: Decimal

    def __post_init__(self) -> None:
        for name in ("input_per_1m_usd", "output_per_1m_usd"):
            value = to_decimal(getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
            object.__setattr__(self, name, value)

    def blended_per_1m_usd(self, prompt_share: Number = DEFAULT_PROMPT_SHARE) -> Decimal:
        """Per 1M tokens of which `prompt_share` are input tokens."""
        share = _fraction("prompt_share", to_decimal(prompt_share))
        return share * self.input_per_1m_usd + (1 - share) * self.output_per_1m_usd

    def cost_usd(self, prompt_tokens: Number, completion_tokens: Number) -> Decimal:
        """What the cloud charges for these tokens."""
        return (
            to_decimal(prompt_tokens) * self.input_per_1m_usd
            + to_decimal(completion_tokens) * self.output_per_1m_usd
        ) / MILLION


def tokens_per_year_from_rate(tokens_per_s: Number) -> Decimal:
    """Tokens a device processes in a (seed) year at a steady rate."""
    return _positive("tokens_per_s", to_decimal(tokens_per_s)) * SECONDS_PER_YEAR


def inferences_per_second(tokens_per_s: Number, tokens_per_inference: Number) -> Decimal:
    """The inference rate a token rate means, at `tokens_per_inference`."""
    rate = _positive("tokens_per_s", to_decimal(tokens_per_s))
    return rate / _positive("tokens_per_inference", to_decimal(tokens_per_inference))


def per_1m_tokens_usd(annual_usd: Number, tokens_per_year: Number) -> Decimal:
    """An annual cost spread over a year's tokens, per 1M tokens."""
    tokens = _positive("tokens_per_year", to_decimal(tokens_per_year))
    return to_decimal(annual_usd) / tokens * MILLION


def break_even_tokens_per_device_day(per_device_year_usd: Number, cloud_per_1m: Number) -> Decimal:
    """Tokens per device and day at which a device costs what the cloud would charge."""
    price = _positive("cloud price per 1M tokens", to_decimal(cloud_per_1m))
    return to_decimal(per_device_year_usd) / DAYS_PER_YEAR / price * MILLION


@dataclass(frozen=True)
class TokenCost:
    """One device at a token rate, next to a cloud's token prices (exact)."""

    tokens_per_s: Decimal
    tokens_per_inference: Decimal
    per_device_year_usd: Decimal
    edge_per_1m_usd: Decimal
    prompt_share: Decimal
    cloud: TokenPrices | None

    @property
    def tokens_per_device_year(self) -> Decimal:
        return self.tokens_per_s * SECONDS_PER_YEAR

    @property
    def tokens_per_device_day(self) -> Decimal:
        return self.tokens_per_device_year / DAYS_PER_YEAR

    @property
    def inferences_per_s(self) -> Decimal:
        return inferences_per_second(self.tokens_per_s, self.tokens_per_inference)

    @property
    def cloud_per_1m_usd(self) -> Decimal | None:
        return None if self.cloud is None else self.cloud.blended_per_1m_usd(self.prompt_share)

    @property
    def cloud_per_inference_usd(self) -> Decimal | None:
        per = self.cloud_per_1m_usd
        return None if per is None else per * self.tokens_per_inference / MILLION

    @property
    def break_even_tokens_per_device_day(self) -> Decimal | None:
        per = self.cloud_per_1m_usd
        if per is None or per <= 0:
            return None
        return break_even_tokens_per_device_day(self.per_device_year_usd, per)


def token_cost(
    per_device_year_usd: Number,
    tokens_per_s: Number,
    *,
    tokens_per_inference: Number = DEFAULT_TOKENS_PER_INFERENCE,
    cloud: TokenPrices | None = None,
    prompt_share: Number = DEFAULT_PROMPT_SHARE,
) -> TokenCost:
    """Edge cost per 1M tokens at `tokens_per_s`, beside the cloud's blended price."""
    rate = _positive("tokens_per_s", to_decimal(tokens_per_s))
    year = to_decimal(per_device_year_usd)
    return TokenCost(
        tokens_per_s=rate,
        tokens_per_inference=_positive("tokens_per_inference", to_decimal(tokens_per_inference)),
        per_device_year_usd=year,
        edge_per_1m_usd=per_1m_tokens_usd(year, tokens_per_year_from_rate(rate)),
        prompt_share=_fraction("prompt_share", to_decimal(prompt_share)),
        cloud=cloud,
    )


# ------------------------------------------------------------------------------- counting


def sum_tokens(
    counts: Iterable[tuple[TokenKey, int]] | Mapping[TokenKey, int],
    *,
    model: str | None = None,
    kind: str | None = None,
    where: str | None = None,
) -> int:
    """Tokens matching the given labels (None: any)."""
    items = counts.items() if isinstance(counts, Mapping) else counts
    return sum(
        n
        for (m, k, w), n in items
        if (model is None or m == model) and (kind is None or k == kind)
        and (where is None or w == where)
    )  # fmt: skip


def cloud_token_spend(counts: Mapping[TokenKey, int], prices: TokenPrices) -> Decimal:
    """The cloud's tokens in `counts`, priced."""
    return prices.cost_usd(
        sum_tokens(counts, kind=PROMPT, where=CLOUD),
        sum_tokens(counts, kind=COMPLETION, where=CLOUD),
    )
