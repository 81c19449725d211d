"""Money in and out: exact ``Decimal`` from numbers and text, and money for people and JSON.

Every FinOps figure is a ``Decimal`` so that sums are exact; this module is where numbers
enter (:func:`to_decimal`, :func:`parse_amount` for user input) and where they leave as text
(:func:`usd`, :func:`usd_small`, :func:`usd_auto`) or as JSON floats (:func:`rounded`,
:func:`significant`).
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import TypeAlias, overload

Number: TypeAlias = Decimal | int | float | str


def to_decimal(value: Number) -> Decimal:
    """Convert without binary noise: floats go through ``repr`` (``0.12`` stays ``0.12``)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return Decimal(repr(value))
    result = Decimal(value)
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def parse_amount(value: object, *, positive: bool = False, at_most_one: bool = False) -> Decimal:
    """A user's number (a flag, a manifest value): finite and >= 0 (> 0 with ``positive``,
    at most 1 with ``at_most_one``); ValueError saying what is wrong otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"not a number: {value!r}")
    try:
        amount = to_decimal(value)
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if positive and amount <= 0:
        raise ValueError(f"must be > 0, got {value}")
    if amount < 0:
        raise ValueError(f"must be >= 0, got {value}")
    if at_most_one and amount > 1:
        raise ValueError(f"must be within [0, 1], got {value}")
    return amount


# --- text ------------------------------------------------------------------------------------


def usd(value: Decimal | None) -> str:
    """Dollars and cents, e.g. $13,666.67 ('-' when unknown)."""
    return "-" if value is None else f"${value:,.2f}"


def usd_small(value: Decimal) -> str:
    """Four significant digits in plain notation, e.g. $0.000004403 (a cost per inference)."""
    if value == 0:
        return "$0"
    places = max(2, 3 - value.adjusted())
    return f"${value:,.{places}f}"


def usd_auto(value: Decimal | None) -> str:
    """Cents from a dollar up, four significant digits below ('-' when unknown, $0 for zero):
    for tables that mix a fleet's spend with fractions of a cent."""
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    return usd(value) if abs(value) >= 1 else usd_small(value)


# --- JSON --------------------------------------------------------------------------------------


@overload
def rounded(value: Decimal, places: int = 2) -> float: ...
@overload
def rounded(value: Decimal | None, places: int = 2) -> float | None: ...
def rounded(value: Decimal | None, places: int = 2) -> float | None:
    """A float rounded to ``places`` decimals (cents by default); None stays None."""
    return None if value is None else float(round(value, places))


@overload
def significant(value: Decimal, digits: int = 6) -> float: ...
@overload
def significant(value: Decimal | None, digits: int = 6) -> float | None: ...
def significant(value: Decimal | None, digits: int = 6) -> float | None:
    """A float to ``digits`` significant digits (per-inference figures: cents would zero
    them); None stays None."""
    return None if value is None else float(f"{value:.{digits}g}")
