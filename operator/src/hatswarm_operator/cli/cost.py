"""``hatswarm cost``: the seed's TCO model on the command line, from flags or a pool manifest.

Prints a table (or ``-o json|yaml`` for scripts) with a device's and the fleet's annual cost, the
cost per inference at the given volume, and, with a cloud price, the cloud's cost per
inference and the break-even volume; ``--plot`` draws both against volume. Flags override
the manifest's ``spec.cost`` block (read through the API types, as the operator reads it),
which overrides the seed's example device.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from hatswarm_operator.api.manifests import ManifestError, load
from hatswarm_operator.cli.common import (
    CommandError,
    Parser,
    UsageError,
    add_output,
    emit,
    run,
    usage_errors,
)
from hatswarm_operator.finops import charts
from hatswarm_operator.finops.attribution import PoolCostInputs, pool_cost_inputs
from hatswarm_operator.finops.money import parse_amount, rounded, significant, usd, usd_small
from hatswarm_operator.finops.tco import (
    DAYS_PER_YEAR,
    SECONDS_PER_YEAR,
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
)
from hatswarm_operator.finops.tokens import (
    DEFAULT_PROMPT_SHARE,
    DEFAULT_TOKENS_PER_INFERENCE,
    MILLION,
    TokenCost,
    TokenPrices,
    inferences_per_second,
    token_cost,
)

# flag dest -> the DeviceCostInputs field it overrides
_DEVICE_FLAGS: dict[str, str] = {
    "device_price": "device_price_usd",
    "hat_price": "hat_price_usd",
    "lifespan_years": "lifespan_years",
    "watts": "watts",
    "kwh_price": "electricity_usd_per_kwh",
    "mgmt_per_device_year": "mgmt_usd_per_device_year",
    "connectivity_per_device_year": "connectivity_usd_per_device_year",
}


def _arg(**kwargs: bool) -> Callable[[str], Decimal]:
    def convert(text: str) -> Decimal:
        try:
            return parse_amount(text, **kwargs)
        except ValueError as exc:
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
    parser = Parser(
        prog=prog,
        description="Edge vs cloud cost per inference for a Pi 5 + AI HAT+ pool. "
        "Subcommands: `hatswarm cost incident` (a postmortem's cost from Prometheus) and "
        "`hatswarm cost report` (showback by team and model); each has its own --help.",
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
    volume.add_argument(
        "--tokens-per-s",
        type=_arg(positive=True),
        metavar="N",
        help="tokens/s per device (a generative model's measured rate; prompt + completion)",
    )
    parser.add_argument(
        "--tokens-per-inference",
        type=_arg(positive=True),
        metavar="T",
        default=DEFAULT_TOKENS_PER_INFERENCE,
        help="tokens one inference processes, to state token rates as inferences and back "
        f"(default {DEFAULT_TOKENS_PER_INFERENCE}: --tokens-per-s 100 is the seed's 1/s)",
    )
    parser.add_argument(
        "--prompt-share",
        type=_arg(at_most_one=True),
        metavar="F",
        default=DEFAULT_PROMPT_SHARE,
        help="share of tokens that are prompt (input) tokens, to blend the cloud's two "
        f"prices (default {DEFAULT_PROMPT_SHARE})",
    )
    cloud = parser.add_mutually_exclusive_group()
    cloud.add_argument("--cloud-per-1k", type=money, metavar="USD", help="cloud price per 1k")
    cloud.add_argument("--cloud-per-hour", type=money, metavar="USD", help="cloud GPU per hour")
    cloud.add_argument(
        "--cloud-per-1m-input",
        type=money,
        metavar="USD",
        help="cloud LLM price per 1M input tokens (with --cloud-per-1m-output)",
    )
    parser.add_argument(
        "--cloud-per-1m-output", type=money, metavar="USD", help="cloud LLM per 1M output tokens"
    )
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
    add_output(parser)
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="plot cost vs volume")
    return parser


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
    tokens: TokenCost | None = None
    """Per-token figures: with --tokens-per-s or cloud token prices."""

    @property
    def per_device_day(self) -> Decimal:
        return self.inferences_per_device_year / DAYS_PER_YEAR

    @property
    def cloud_usd_per_year(self) -> Decimal | None:
        """What the fleet's whole volume would cost in the cloud."""
        if self.cloud_per_inference_usd is None:
            return None
        return self.inferences_per_device_year * self.fleet.devices * self.cloud_per_inference_usd


def read_pool_costs(path: Path) -> PoolCostInputs:
    """The first InferencePool's cost inputs and cloud price in a file (UsageError if none)."""
    with usage_errors(ManifestError):
        pools = load([path], kinds=["InferencePool"]).pools
    if not pools:
        raise UsageError(f"{path} has no document of kind InferencePool")
    inputs = pool_cost_inputs(pools[0])
    cloud = pools[0].spec.cloud_fallback
    if cloud is not None and "price_per1k_usd" not in cloud.model_fields_set:
        inputs = dataclasses.replace(inputs, cloud_usd_per_1k=None)  # no price is not free
    return inputs


def _report(args: argparse.Namespace) -> CostReport:
    base = read_pool_costs(args.file) if args.file else PoolCostInputs()
    overrides = {
        name: getattr(args, dest)
        for dest, name in _DEVICE_FLAGS.items()
        if getattr(args, dest) is not None
    }
    inputs = dataclasses.replace(base.device, **overrides)
    shared_ops = args.shared_ops_per_year
    if shared_ops is None:
        shared_ops = base.shared_ops_usd_per_year
    fleet = fleet_annual_cost(inputs, args.devices, shared_ops)

    if (args.cloud_per_1m_input is None) != (args.cloud_per_1m_output is None):
        raise UsageError("--cloud-per-1m-input and --cloud-per-1m-output go together")
    token_prices = (
        TokenPrices(args.cloud_per_1m_input, args.cloud_per_1m_output)
        if args.cloud_per_1m_input is not None
        else base.cloud_tokens
        if args.cloud_per_1k is None and args.cloud_per_hour is None
        else None
    )
    if args.tokens_per_s is not None:
        volume = inferences_per_year_from_rate(
            inferences_per_second(args.tokens_per_s, args.tokens_per_inference)
        )
    elif args.per_second is not None:
        volume = inferences_per_year_from_rate(args.per_second)
    else:
        volume = inferences_per_year_from_daily(args.per_day)
    per_inference = cost_per_inference(fleet.per_device_usd_per_year, volume)

    cloud: Decimal | None = None
    if args.cloud_inferences_per_hour is not None and args.cloud_per_hour is None:
        raise UsageError("--cloud-inferences-per-hour needs --cloud-per-hour")
    if args.cloud_per_hour is not None:
        if args.cloud_inferences_per_hour is None:
            raise UsageError("--cloud-per-hour needs --cloud-inferences-per-hour")
        cloud = cloud_per_inference_from_hourly(args.cloud_per_hour, args.cloud_inferences_per_hour)
    elif args.cloud_per_1k is not None:
        cloud = cloud_per_inference_from_per_1k(args.cloud_per_1k)
    elif token_prices is not None:
        blended_1m = token_prices.blended_per_1m_usd(args.prompt_share)
        cloud = blended_1m * args.tokens_per_inference / MILLION
    elif base.cloud_usd_per_1k is not None:
        cloud = cloud_per_inference_from_per_1k(base.cloud_usd_per_1k)
    tokens: TokenCost | None = None
    if args.tokens_per_s is not None or token_prices is not None:
        tokens = token_cost(
            fleet.per_device_usd_per_year,
            volume / SECONDS_PER_YEAR * args.tokens_per_inference,
            tokens_per_inference=args.tokens_per_inference,
            cloud=token_prices,
            prompt_share=args.prompt_share,
        )

    blended: BlendedCost | None = None
    if args.cloud_share is not None:
        if cloud is None:
            raise UsageError("--cloud-share needs a cloud price (--cloud-per-1k or the manifest)")
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
        tokens=tokens,
    )


# ---------------------------------------------------------------------------------- output


def to_json(report: CostReport) -> dict[str, Any]:
    """The ``-o json`` object: floats rounded for reading, computed from exact values."""
    fleet = report.fleet
    out: dict[str, Any] = {
        "devices": fleet.devices,
        "device_year_usd": rounded(fleet.device.total_usd_per_year),
        "fleet_year_usd": rounded(fleet.total_usd_per_year),
        "per_device_year_usd": rounded(fleet.per_device_usd_per_year),
        "inferences_per_device_year": rounded(report.inferences_per_device_year, 3),
        "inferences_per_device_day": rounded(report.per_device_day, 3),
        "per_inference_usd": significant(report.per_inference_usd),
        "per_1k_inferences_usd": significant(report.per_inference_usd * 1000),
        "breakdown_fleet_year_usd": {
            "capex": rounded(fleet.capex_usd_per_year),
            "energy": rounded(fleet.energy_usd_per_year),
            "mgmt": rounded(fleet.mgmt_usd_per_year),
            "connectivity": rounded(fleet.connectivity_usd_per_year),
            "shared_ops": rounded(fleet.shared_ops_usd_per_year),
        },
        "energy_kwh_per_device_year": rounded(fleet.device.energy_kwh_per_year, 3),
        "inputs": {f.name: float(getattr(report.inputs, f.name)) for f in fields(DeviceCostInputs)}
        | {"shared_ops_usd_per_year": float(fleet.shared_ops_usd_per_year)},
    }
    if report.cloud_per_inference_usd is not None:
        cloud_year = report.cloud_usd_per_year
        assert cloud_year is not None
        out["cloud_per_inference_usd"] = significant(report.cloud_per_inference_usd)
        out["cloud_fleet_year_usd"] = rounded(cloud_year)
        out["savings_vs_cloud_year_usd"] = rounded(cloud_year - fleet.total_usd_per_year)
        out["break_even_per_device_day"] = (
            None
            if report.break_even_per_device_day is None
            else rounded(report.break_even_per_device_day, 3)
        )
    if report.tokens is not None:
        out["tokens"] = tokens_json(report.tokens)
    if report.blended is not None:
        out["cloud_share"] = float(report.blended.cloud_share)
        out["blended_per_inference_usd"] = significant(report.blended.per_inference_usd)
        out["blended_fleet_year_usd"] = rounded(report.blended.total_usd_per_year)
    return out


def tokens_json(t: TokenCost) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tokens_per_s": float(t.tokens_per_s),
        "tokens_per_inference": float(t.tokens_per_inference),
        "tokens_per_device_day": rounded(t.tokens_per_device_day, 3),
        "tokens_per_device_year": rounded(t.tokens_per_device_year, 3),
        "edge_per_1m_tokens_usd": significant(t.edge_per_1m_usd),
    }
    if t.cloud is not None:
        out["cloud_per_1m_input_usd"] = float(t.cloud.input_per_1m_usd)
        out["cloud_per_1m_output_usd"] = float(t.cloud.output_per_1m_usd)
        out["prompt_share"] = float(t.prompt_share)
        per = t.cloud_per_1m_usd
        out["cloud_per_1m_tokens_usd"] = None if per is None else significant(per)
        be = t.break_even_tokens_per_device_day
        out["break_even_tokens_per_device_day"] = None if be is None else rounded(be, 3)
    return out


def _tokens_lines(t: TokenCost) -> list[str]:
    lines = [
        "",
        f"{'tokens per device:':<26}{_num(t.tokens_per_s)}/s, {_num(t.tokens_per_device_day)} a "
        f"day ({_num(t.tokens_per_inference)} per inference: {_num(t.inferences_per_s)} "
        "inferences/s)",
        f"{'edge cost per 1M tokens:':<26}{usd_small(t.edge_per_1m_usd)}",
    ]
    per, be = t.cloud_per_1m_usd, t.break_even_tokens_per_device_day
    if t.cloud is not None and per is not None:
        lines.append(
            f"{'cloud cost per 1M tokens:':<26}{usd_small(per)} "
            f"(${_num(t.cloud.input_per_1m_usd)} in, ${_num(t.cloud.output_per_1m_usd)} out, "
            f"{t.prompt_share:.0%} prompt)"
        )
        if be is not None:
            cheaper = "edge" if t.edge_per_1m_usd < per else "cloud"
            lines.append(
                f"{'break-even volume:':<26}{_num(be)} tokens per device per day "
                f"({cheaper} is cheaper at this volume)"
            )
    return lines


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
    lines += [f"{label:<{width}}{usd(dev):>14}{usd(tot):>16}" for label, dev, tot in rows]
    lines.append(
        f"{'total':<{width}}{usd(fleet.per_device_usd_per_year):>14}"
        f"{usd(fleet.total_usd_per_year):>16}"
    )
    lines.append(f"(one device's own costs: {usd(fleet.device.total_usd_per_year)} a year)")
    lines.append("")
    lines.append(
        f"{'volume per device:':<26}{_num(report.per_device_day)} a day, "
        f"{_num(report.inferences_per_device_year)} a year"
    )
    lines.append(f"{'edge cost per inference:':<26}{usd_small(report.per_inference_usd)}")
    if report.cloud_per_inference_usd is not None:
        cloud_year = report.cloud_usd_per_year
        assert cloud_year is not None
        lines.append(
            f"{'cloud cost per inference:':<26}{usd_small(report.cloud_per_inference_usd)}"
        )
        if report.break_even_per_device_day is not None:
            cheaper = (
                "edge" if report.per_inference_usd < report.cloud_per_inference_usd else "cloud"
            )
            lines.append(
                f"{'break-even volume:':<26}{_num(report.break_even_per_device_day)} "
                f"inferences per device per day ({cheaper} is cheaper at this volume)"
            )
        saved = cloud_year - fleet.total_usd_per_year
        verdict = f"edge saves {usd(saved)}" if saved >= 0 else f"edge costs {usd(-saved)} more"
        lines.append(f"{'same volume in the cloud:':<26}{usd(cloud_year)} a year ({verdict})")
    if report.tokens is not None:
        lines += _tokens_lines(report.tokens)
    if report.blended is not None:
        lines.append(
            f"blended, {report.blended.cloud_share:.0%} to cloud: "
            f"{usd_small(report.blended.per_inference_usd)} per inference, "
            f"{usd(report.blended.total_usd_per_year)} a year"
        )
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> int:
    report = _report(args)
    emit(args.output, to_json(report), lambda: to_table(report))
    if args.plot is not None:
        t = report.tokens if args.tokens_per_s is not None else None
        try:
            charts.cost_vs_volume(
                args.plot,
                devices=report.fleet.devices,
                per_device_year_usd=report.fleet.per_device_usd_per_year,
                per_device_day=report.per_device_day if t is None else t.tokens_per_device_day,
                cloud_per_inference_usd=(
                    report.cloud_per_inference_usd if t is None else t.cloud_per_1m_usd
                ),
                break_even_per_device_day=(
                    report.break_even_per_device_day
                    if t is None
                    else t.break_even_tokens_per_device_day
                ),
                cloud_share=report.blended.cloud_share if report.blended else None,
                tokens=t is not None,
            )
        except ImportError as exc:
            msg = "--plot needs matplotlib: pip install 'hatswarm-operator[plot]'"
            raise CommandError(msg) from exc
        except OSError as exc:
            raise CommandError(f"cannot write {args.plot}: {exc}") from exc
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


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
    return run(build_parser(), args_list, _command)


if __name__ == "__main__":
    sys.exit(main())
