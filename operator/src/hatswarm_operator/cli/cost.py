"""``hatswarm cost``: the seed's TCO model on the command line, from flags or a pool manifest.

Prints a table (or ``--json`` for scripts) with a device's and the fleet's annual cost, the
cost per inference at the given volume, and, with a cloud price, the cloud's cost per
inference and the break-even volume; ``--plot`` draws both against volume. Flags override
the manifest's ``spec.cost`` block, which overrides the seed's example device.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from hatswarm_operator.finops.tco import (
    DAYS_PER_YEAR,
    BlendedCost,
    DeviceCostInputs,
    FleetCost,
    blended_cost,
    break_even_per_device_day,
    cloud_per_inference_from_hourly,
    cloud_per_inference_from_per_1k,
    cost_per_inference,
    fleet_annual_cost,
    inferences_per_year_from_daily,
    inferences_per_year_from_rate,
    to_decimal,
)

# flag dest -> (DeviceCostInputs field or "shared_ops", manifest spec.cost key)
_COST_FIELDS: dict[str, tuple[str, str]] = {
    "device_price": ("device_price_usd", "devicePriceUsd"),
    "hat_price": ("hat_price_usd", "hatPriceUsd"),
    "lifespan_years": ("lifespan_years", "lifespanYears"),
    "watts": ("watts", "watts"),
    "kwh_price": ("electricity_usd_per_kwh", "electricityUsdPerKwh"),
    "mgmt_per_device_year": ("mgmt_usd_per_device_year", "mgmtUsdPerDeviceYear"),
    "connectivity_per_device_year": (
        "connectivity_usd_per_device_year",
        "connectivityUsdPerDeviceYear",
    ),
    "shared_ops_per_year": ("shared_ops", "sharedOpsUsdPerYear"),
}
_POSITIVE = frozenset({"lifespan_years"})


class _InputError(ValueError):
    """A bad value, reported through ``parser.error`` (exit 2)."""


def _parse_decimal(text: object, *, positive: bool = False, at_most_one: bool = False) -> Decimal:
    if isinstance(text, bool) or not isinstance(text, str | int | float | Decimal):
        raise _InputError(f"not a number: {text!r}")
    try:
        value = to_decimal(text)
    except (InvalidOperation, ValueError) as exc:
        raise _InputError(f"not a number: {text!r}") from exc
    if positive and value <= 0:
        raise _InputError(f"must be > 0, got {text}")
    if value < 0:
        raise _InputError(f"must be >= 0, got {text}")
    if at_most_one and value > 1:
        raise _InputError(f"must be within [0, 1], got {text}")
    return value


def _arg(**kwargs: bool) -> Callable[[str], Decimal]:
    def convert(text: str) -> Decimal:
        try:
            return _parse_decimal(text, **kwargs)
        except _InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return convert


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser(prog: str = "hatswarm cost") -> argparse.ArgumentParser:
    """The parser, separate so the top-level CLI can show its help."""
    defaults = DeviceCostInputs()
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Edge vs cloud cost per inference for a Pi 5 + AI HAT+ pool.",
        epilog="Device flags default to the manifest's spec.cost, else the seed's example "
        f"device (${defaults.device_price_usd} Pi 5, ${defaults.hat_price_usd} HAT+, "
        f"{defaults.lifespan_years} years, {defaults.watts} W, "
        f"${defaults.electricity_usd_per_kwh}/kWh, ${defaults.mgmt_usd_per_device_year} "
        "management per device-year).",
    )
    parser.add_argument("-f", "--file", type=Path, help="InferencePool manifest (YAML)")
    parser.add_argument("--devices", type=_positive_int, default=1, help="devices in the fleet")
    money = _arg()
    parser.add_argument("--device-price", type=money, metavar="USD", help="Pi 5 price")
    parser.add_argument("--hat-price", type=money, metavar="USD", help="AI HAT+ price")
    parser.add_argument("--lifespan-years", type=_arg(positive=True), metavar="Y")
    parser.add_argument("--watts", type=money, metavar="W", help="average draw per device")
    parser.add_argument("--kwh-price", type=money, metavar="USD", help="electricity per kWh")
    parser.add_argument("--mgmt-per-device-year", type=money, metavar="USD")
    parser.add_argument("--connectivity-per-device-year", type=money, metavar="USD")
    parser.add_argument("--shared-ops-per-year", type=money, metavar="USD")
    volume = parser.add_mutually_exclusive_group(required=True)
    volume.add_argument(
        "--per-second", type=_arg(positive=True), metavar="R", help="inferences/s per device"
    )
    volume.add_argument(
        "--per-day", type=_arg(positive=True), metavar="N", help="inferences/day per device"
    )
    cloud = parser.add_mutually_exclusive_group()
    cloud.add_argument("--cloud-per-1k", type=money, metavar="USD", help="cloud price per 1k")
    cloud.add_argument("--cloud-per-hour", type=money, metavar="USD", help="cloud GPU per hour")
    parser.add_argument(
        "--cloud-inferences-per-hour",
        type=_arg(positive=True),
        metavar="N",
        help="measured throughput of that cloud GPU (with --cloud-per-hour)",
    )
    parser.add_argument(
        "--cloud-share",
        type=_arg(at_most_one=True),
        metavar="F",
        help="fraction of traffic that falls back to the cloud (0..1), for a blended figure",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="plot cost vs volume")
    return parser


def _read_manifest(path: Path) -> dict[str, Any]:
    """The first ``kind: InferencePool`` document's spec (a file may hold several)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise _InputError(f"{path} is not valid YAML: {exc}") from exc
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == "InferencePool":
            spec = doc.get("spec") or {}
            if not isinstance(spec, dict):
                raise _InputError(f"{path}: spec of the InferencePool is not a mapping")
            return spec
    raise _InputError(f"{path} has no document of kind InferencePool")


def _section(spec: dict[str, Any], key: str) -> dict[str, Any]:
    section = spec.get(key) or {}
    if not isinstance(section, dict):
        raise _InputError(f"spec.{key} is not a mapping")
    return section


@dataclass(frozen=True)
class CostReport:
    """Everything the table, the JSON and the plot show, exact."""

    fleet: FleetCost
    inputs: DeviceCostInputs
    inferences_per_device_year: Decimal
    per_inference_usd: Decimal
    cloud_per_inference_usd: Decimal | None
    break_even_per_device_day: Decimal | None
    blended: BlendedCost | None

    @property
    def per_device_day(self) -> Decimal:
        return self.inferences_per_device_year / DAYS_PER_YEAR

    @property
    def cloud_usd_per_year(self) -> Decimal | None:
        """What the fleet's whole volume would cost in the cloud."""
        if self.cloud_per_inference_usd is None:
            return None
        return self.inferences_per_device_year * self.fleet.devices * self.cloud_per_inference_usd


def _report(args: argparse.Namespace) -> CostReport:
    spec: dict[str, Any] = _read_manifest(args.file) if args.file else {}
    manifest_cost = _section(spec, "cost")
    values: dict[str, Decimal] = {}
    for dest, (name, key) in _COST_FIELDS.items():
        flag = getattr(args, dest)
        if flag is not None:
            values[name] = flag
        elif manifest_cost.get(key) is not None:
            try:
                values[name] = _parse_decimal(manifest_cost[key], positive=dest in _POSITIVE)
            except _InputError as exc:
                raise _InputError(f"spec.cost.{key}: {exc}") from exc
    shared_ops = values.pop("shared_ops", Decimal(0))
    inputs = DeviceCostInputs(**values)
    fleet = fleet_annual_cost(inputs, args.devices, shared_ops)

    if args.per_second is not None:
        volume = inferences_per_year_from_rate(args.per_second)
    else:
        volume = inferences_per_year_from_daily(args.per_day)
    per_inference = cost_per_inference(fleet.per_device_usd_per_year, volume)

    cloud: Decimal | None = None
    if args.cloud_inferences_per_hour is not None and args.cloud_per_hour is None:
        raise _InputError("--cloud-inferences-per-hour needs --cloud-per-hour")
    if args.cloud_per_hour is not None:
        if args.cloud_inferences_per_hour is None:
            raise _InputError("--cloud-per-hour needs --cloud-inferences-per-hour")
        cloud = cloud_per_inference_from_hourly(args.cloud_per_hour, args.cloud_inferences_per_hour)
    elif args.cloud_per_1k is not None:
        cloud = cloud_per_inference_from_per_1k(args.cloud_per_1k)
    else:
        fallback = _section(spec, "cloudFallback")
        if fallback.get("pricePer1kUsd") is not None:
            try:
                cloud = cloud_per_inference_from_per_1k(_parse_decimal(fallback["pricePer1kUsd"]))
            except _InputError as exc:
                raise _InputError(f"spec.cloudFallback.pricePer1kUsd: {exc}") from exc

    blended: BlendedCost | None = None
    if args.cloud_share is not None:
        if cloud is None:
            raise _InputError("--cloud-share needs a cloud price (--cloud-per-1k or the manifest)")
        blended = blended_cost(
            fleet.total_usd_per_year, volume * fleet.devices, args.cloud_share, cloud
        )
    return CostReport(
        fleet=fleet,
        inputs=inputs,
        inferences_per_device_year=volume,
        per_inference_usd=per_inference,
        cloud_per_inference_usd=cloud,
        break_even_per_device_day=(
            None
            if cloud is None
            else break_even_per_device_day(fleet.per_device_usd_per_year, cloud)
        ),
        blended=blended,
    )


# ---------------------------------------------------------------------------------- output


def _money(value: Decimal) -> float:
    """Annual figures to the cent."""
    return float(round(value, 2))


def _small(value: Decimal) -> float:
    """Per-inference figures to 6 significant digits: cents would round them to zero."""
    return float(f"{value:.6g}")


def _count(value: Decimal) -> float:
    return float(round(value, 3))


def to_json(report: CostReport) -> dict[str, Any]:
    """The ``--json`` object: floats rounded for reading, computed from exact values."""
    fleet = report.fleet
    out: dict[str, Any] = {
        "devices": fleet.devices,
        "device_year_usd": _money(fleet.device.total_usd_per_year),
        "fleet_year_usd": _money(fleet.total_usd_per_year),
        "per_device_year_usd": _money(fleet.per_device_usd_per_year),
        "inferences_per_device_year": _count(report.inferences_per_device_year),
        "inferences_per_device_day": _count(report.per_device_day),
        "per_inference_usd": _small(report.per_inference_usd),
        "per_1k_inferences_usd": _small(report.per_inference_usd * 1000),
        "breakdown_fleet_year_usd": {
            "capex": _money(fleet.capex_usd_per_year),
            "energy": _money(fleet.energy_usd_per_year),
            "mgmt": _money(fleet.mgmt_usd_per_year),
            "connectivity": _money(fleet.connectivity_usd_per_year),
            "shared_ops": _money(fleet.shared_ops_usd_per_year),
        },
        "energy_kwh_per_device_year": _count(fleet.device.energy_kwh_per_year),
        "inputs": {f.name: float(getattr(report.inputs, f.name)) for f in fields(DeviceCostInputs)}
        | {"shared_ops_usd_per_year": float(fleet.shared_ops_usd_per_year)},
    }
    if report.cloud_per_inference_usd is not None:
        cloud_year = report.cloud_usd_per_year
        assert cloud_year is not None
        out["cloud_per_inference_usd"] = _small(report.cloud_per_inference_usd)
        out["cloud_fleet_year_usd"] = _money(cloud_year)
        out["savings_vs_cloud_year_usd"] = _money(cloud_year - fleet.total_usd_per_year)
        out["break_even_per_device_day"] = (
            None
            if report.break_even_per_device_day is None
            else _count(report.break_even_per_device_day)
        )
    if report.blended is not None:
        out["cloud_share"] = float(report.blended.cloud_share)
        out["blended_per_inference_usd"] = _small(report.blended.per_inference_usd)
        out["blended_fleet_year_usd"] = _money(report.blended.total_usd_per_year)
    return out


def _usd(value: Decimal) -> str:
    return f"${value:,.2f}"


def _usd_small(value: Decimal) -> str:
    """Four significant digits in plain notation, e.g. $0.000004403."""
    if value == 0:
        return "$0"
    exponent = value.adjusted()
    places = max(2, 3 - exponent)
    return f"${value:,.{places}f}"


def _num(value: Decimal) -> str:
    """Whole numbers plain, others to at most two places (87.6 kWh, 928.34 a day)."""
    text = f"{value:,.2f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def to_table(report: CostReport) -> str:
    """A human-readable report: per device (with its share of shared ops) and fleet."""
    fleet, inputs = report.fleet, report.inputs
    n = fleet.devices
    rows: list[tuple[str, Decimal, Decimal]] = [
        (
            f"hardware (${_num(inputs.capex_usd)} / {_num(inputs.lifespan_years)} y)",
            fleet.device.capex_usd_per_year,
            fleet.capex_usd_per_year,
        ),
        (
            f"energy ({_num(inputs.watts)} W, {_num(fleet.device.energy_kwh_per_year)} kWh"
            f" at ${inputs.electricity_usd_per_kwh}/kWh)",
            fleet.device.energy_usd_per_year,
            fleet.energy_usd_per_year,
        ),
        ("management", fleet.device.mgmt_usd_per_year, fleet.mgmt_usd_per_year),
        ("connectivity", fleet.device.connectivity_usd_per_year, fleet.connectivity_usd_per_year),
        ("shared ops", fleet.shared_ops_usd_per_year / n, fleet.shared_ops_usd_per_year),
    ]
    width = max(len(label) for label, _, _ in rows) + 2
    lines = [
        f"hatswarm cost: {n} device{'s' if n != 1 else ''}",
        f"{'annual cost':<{width}}{'per device':>14}{'fleet':>16}",
    ]
    lines += [f"{label:<{width}}{_usd(dev):>14}{_usd(tot):>16}" for label, dev, tot in rows]
    lines.append(
        f"{'total':<{width}}{_usd(fleet.per_device_usd_per_year):>14}"
        f"{_usd(fleet.total_usd_per_year):>16}"
    )
    lines.append(f"(one device's own costs: {_usd(fleet.device.total_usd_per_year)} a year)")
    lines.append("")
    lines.append(
        f"{'volume per device:':<26}{_num(report.per_device_day)} a day, "
        f"{_num(report.inferences_per_device_year)} a year"
    )
    lines.append(f"{'edge cost per inference:':<26}{_usd_small(report.per_inference_usd)}")
    if report.cloud_per_inference_usd is not None:
        cloud_year = report.cloud_usd_per_year
        assert cloud_year is not None
        lines.append(
            f"{'cloud cost per inference:':<26}{_usd_small(report.cloud_per_inference_usd)}"
        )
        if report.break_even_per_device_day is not None:
            cheaper = (
                "edge" if report.per_inference_usd < report.cloud_per_inference_usd else "cloud"
            )
            lines.append(
                f"{'break-even volume:':<26}{_num(report.break_even_per_device_day)} "
                f"inferences per device per day ({cheaper} is cheaper at this volume)"
            )
        lines.append(
            f"{'same volume in the cloud:':<26}{_usd(cloud_year)} a year "
            f"(edge saves {_usd(cloud_year - fleet.total_usd_per_year)})"
        )
    if report.blended is not None:
        lines.append(
            f"blended, {report.blended.cloud_share:.0%} to cloud: "
            f"{_usd_small(report.blended.per_inference_usd)} per inference, "
            f"{_usd(report.blended.total_usd_per_year)} a year"
        )
    return "\n".join(lines)


def _float_or_none(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _plot(report: CostReport, path: Path) -> None:
    """Cost per inference against daily volume per device, edge vs cloud, log-log."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_device_year = float(report.fleet.per_device_usd_per_year)
    current = float(report.per_device_day)
    cloud = (
        None if report.cloud_per_inference_usd is None else float(report.cloud_per_inference_usd)
    )
    break_even = (
        None
        if report.break_even_per_device_day is None
        else float(report.break_even_per_device_day)
    )
    anchors = [current] + ([break_even] if break_even else [])
    low, high = min(anchors) / 30, max(anchors) * 30
    steps = 200
    xs = [low * (high / low) ** (i / steps) for i in range(steps + 1)]
    days = float(DAYS_PER_YEAR)

    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(xs, [per_device_year / (days * x) for x in xs], label="edge (Pi 5 + AI HAT+)", lw=2)
    if cloud is not None:
        ax.axhline(cloud, color="tab:red", lw=2, label="cloud")
        if report.blended is not None:
            share = float(report.blended.cloud_share)
            ax.plot(
                xs,
                [per_device_year / (days * x) + share * cloud for x in xs],
                ls="--",
                color="tab:purple",
                label=f"edge + {share:.0%} cloud fallback",
            )
    if break_even is not None and cloud is not None:
        ax.plot([break_even], [cloud], "ko", zorder=5)
        ax.axvline(break_even, color="k", ls=":", lw=1)
        ax.annotate(
            f"break-even\n{break_even:,.0f}/device/day",
            (break_even, cloud),
            textcoords="offset points",
            xytext=(10, 12),
        )
    ax.plot(
        [current], [per_device_year / (days * current)], "s", color="tab:green", zorder=5,
        label=f"this volume: {current:,.0f}/day",
    )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("inferences per device per day")
    ax.set_ylabel("USD per inference")
    n = report.fleet.devices
    ax.set_title(
        f"Cost per inference, {n} device{'s' if n != 1 else ''}, "
        f"${per_device_year:,.2f} per device-year"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hatswarm cost``; returns the exit code (2 for bad input).

    ``hatswarm cost incident ...`` and ``hatswarm cost report ...`` read Prometheus instead
    (:mod:`incident`, :mod:`report`).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in ("incident", "report"):
        from importlib import import_module

        sub = import_module(f"hatswarm_operator.cli.{args_list[0]}")
        code: int = sub.main(args_list[1:])
        return code
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
        try:
            report = _report(args)
        except (_InputError, ValueError) as exc:
            parser.error(str(exc))
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(to_json(report), indent=2))
    else:
        print(to_table(report))
    if args.plot is not None:
        try:
            _plot(report, args.plot)
        except ImportError:
            print(
                "error: --plot needs matplotlib: pip install 'hatswarm-operator[plot]'",
                file=sys.stderr,
            )
            return 1
        except OSError as exc:
            print(f"error: cannot write {args.plot}: {exc}", file=sys.stderr)
            return 1
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
