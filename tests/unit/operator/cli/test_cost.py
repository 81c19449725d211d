"""``hatswarm cost``: flags, manifest, JSON, table, errors and the plot."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hatswarm_operator.cli import cost as cost_cli

KIOSKS = [
    "--devices",
    "200",
    "--mgmt-per-device-year",
    "0",
    "--connectivity-per-device-year",
    "60",
    "--shared-ops-per-year",
    "40000",
    "--per-day",
    "1000",
]

POOL_MANIFEST = """\
apiVersion: hatswarm.io/v1alpha1
kind: EdgeModel
metadata: {name: yolov8s}
spec: {}
---
apiVersion: hatswarm.io/v1alpha1
kind: InferencePool
metadata: {name: kiosks}
spec:
  cost:
    devicePriceUsd: 80
    hatPriceUsd: 70
    lifespanYears: 5
    watts: 8
    electricityUsdPerKwh: 0.25
    mgmtUsdPerDeviceYear: 12
    connectivityUsdPerDeviceYear: 24
    sharedOpsUsdPerYear: 1000
  cloudFallback:
    endpoint: cloud.example:443
    pricePer1kUsd: 0.5
---
apiVersion: hatswarm.io/v1alpha1
kind: InferencePool
metadata: {name: ignored-second-pool}
spec:
  cost: {devicePriceUsd: 1}
"""


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert cost_cli.main([*args, "-o", "json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_seed_single_device_json(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(["--per-second", "1"], capsys)
    assert abs(out["device_year_usd"] - 138.84) <= 0.02
    assert out["fleet_year_usd"] == out["device_year_usd"] == out["per_device_year_usd"]
    assert out["inferences_per_device_year"] == 31_536_000
    assert round(out["per_inference_usd"], 7) == 0.0000044
    assert "cloud_per_inference_usd" not in out


def test_seed_single_device_one_per_five_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(["--per-second", "0.2"], capsys)
    assert out["inferences_per_device_year"] == 6_307_200
    assert round(out["per_inference_usd"], 6) == 0.000022


def test_seed_kiosk_fleet_json(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json([*KIOSKS, "--cloud-per-1k", "1"], capsys)
    assert abs(out["fleet_year_usd"] - 67_767) <= 2.4  # seed took energy as $2,100
    assert round(out["per_device_year_usd"]) == 339
    assert out["device_year_usd"] == pytest.approx(138.85)
    assert round(out["per_inference_usd"], 5) == 0.00093
    assert out["cloud_per_inference_usd"] == 0.001
    breakdown = out["breakdown_fleet_year_usd"]
    assert round(breakdown["capex"]) == 13_667
    assert breakdown["connectivity"] == 12_000
    assert breakdown["shared_ops"] == 40_000
    # edge == cloud at the break-even volume
    be = out["break_even_per_device_day"]
    # (to the rounding of the JSON figures)
    assert out["per_device_year_usd"] / (365 * be) == pytest.approx(0.001, rel=1e-4)


def test_table_shows_the_seed_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost_cli.main([*KIOSKS, "--cloud-per-1k", "1"]) == 0
    table = capsys.readouterr().out
    assert "$13,666.67" in table
    assert "$67,769.07" in table
    assert "$338.85" in table
    assert "$0.0009283" in table
    assert "break-even" in table


def test_hourly_cloud_price(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(
        ["--per-day", "1000", "--cloud-per-hour", "3.6", "--cloud-inferences-per-hour", "1800"],
        capsys,
    )
    assert out["cloud_per_inference_usd"] == 0.002


def test_blended_share(capsys: pytest.CaptureFixture[str]) -> None:
    plain = run_json([*KIOSKS, "--cloud-per-1k", "1"], capsys)
    out = run_json([*KIOSKS, "--cloud-per-1k", "1", "--cloud-share", "0.1"], capsys)
    # 10% of 200 x 365,000 inferences at $0.001 on top of the whole edge cost
    assert out["blended_fleet_year_usd"] == pytest.approx(plain["fleet_year_usd"] + 7300)


def test_manifest_is_read_and_flags_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(POOL_MANIFEST)
    out = run_json(["-f", str(manifest), "--per-day", "1000"], capsys)
    inputs = out["inputs"]
    assert inputs["device_price_usd"] == 80  # the first InferencePool, not the second
    assert inputs["electricity_usd_per_kwh"] == 0.25
    # (80 + 70) / 5 + 8 W x 8.76 x 0.25 + 12 + 24 = 30 + 17.52 + 36
    assert out["device_year_usd"] == 83.52
    assert out["fleet_year_usd"] == 1083.52
    assert out["cloud_per_inference_usd"] == 0.0005

    out = run_json(
        ["-f", str(manifest), "--per-day", "1000", "--hat-price", "130", "--cloud-per-1k", "2"],
        capsys,
    )
    assert out["inputs"]["hat_price_usd"] == 130
    assert out["inputs"]["device_price_usd"] == 80
    assert out["device_year_usd"] == 95.52
    assert out["cloud_per_inference_usd"] == 0.002


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--per-day", "10", "--device-price", "-5"], "must be >= 0"),
        (["--per-day", "10", "--lifespan-years", "0"], "must be > 0"),
        (["--per-day", "10", "--per-second", "1"], "not allowed with"),
        (
            ["--devices", "3"],
            "one of the arguments --per-second --per-day --tokens-per-s is required",
        ),
        (["--per-day", "10", "--devices", "0"], "must be >= 1"),
        (["--per-day", "10", "--watts", "ten"], "not a number"),
        (["--per-day", "10", "--cloud-share", "0.5"], "needs a cloud price"),
        (["--per-day", "10", "--cloud-per-hour", "2"], "needs --cloud-inferences-per-hour"),
        (["--per-day", "10", "-f", "/nonexistent/pool.yaml"], "cannot read"),
    ],
)
def test_bad_input_exits_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cost_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "hatswarm cost: error:" in err
    assert message in err


def test_bad_manifest_value_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "pool.yaml"
    manifest.write_text(
        "apiVersion: hatswarm.io/v1alpha1\nkind: InferencePool\nmetadata: {name: p}\n"
        "spec:\n  cost:\n    lifespanYears: 0\n"
    )
    assert cost_cli.main(["-f", str(manifest), "--per-day", "1"]) == 2
    assert "spec.cost.lifespanYears" in capsys.readouterr().err


def test_manifest_without_a_pool_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "model.yaml"
    manifest.write_text("kind: EdgeModel\nspec: {}\n")
    assert cost_cli.main(["-f", str(manifest), "--per-day", "1"]) == 2
    assert "no document of kind InferencePool" in capsys.readouterr().err


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "cost.png"
    assert cost_cli.main([*KIOSKS, "--cloud-per-1k", "1", "--plot", str(target)]) == 0
    data = target.read_bytes()
    width, height = png_size(data)
    assert width >= 600
    assert height >= 400
    assert len(data) > 20_000
    assert str(target) in capsys.readouterr().err  # stdout carries only the report


def test_module_runs_as_a_script() -> None:
    src = Path(cost_cli.__file__).parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        # --json is deprecated for -o json: it still works, with a warning
        [sys.executable, "-m", "hatswarm_operator.cli.cost", "--per-second", "1", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert abs(json.loads(done.stdout)["device_year_usd"] - 138.84) <= 0.02
    assert "--json is deprecated, use -o json" in done.stderr

    bad = subprocess.run(
        [sys.executable, "-m", "hatswarm_operator.cli.cost", "--per-day", "1", "--per-second", "1"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "not allowed with" in bad.stderr


def test_plot_without_matplotlib_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a None entry in sys.modules makes the import raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    target = tmp_path / "cost.png"
    assert cost_cli.main(["--per-day", "10", "--plot", str(target)]) == 1
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not target.exists()


def test_tokens_per_s_reproduces_the_seeds_3b_example(capsys: pytest.CaptureFixture[str]) -> None:
    """100 tokens/s at the default 100 tokens per inference is the seed's 1 inference/s."""
    seed = run_json(["--per-second", "1"], capsys)
    out = run_json(["--tokens-per-s", "100"], capsys)
    assert out["per_inference_usd"] == seed["per_inference_usd"]
    assert round(out["per_inference_usd"], 7) == 0.0000044
    assert abs(out["device_year_usd"] - 138.84) <= 0.02
    t = out["tokens"]
    assert t["tokens_per_inference"] == 100 and t["tokens_per_device_day"] == 8_640_000
    assert round(t["edge_per_1m_tokens_usd"], 5) == 0.04403
    slow = run_json(["--tokens-per-s", "100", "--tokens-per-inference", "500"], capsys)
    assert round(slow["per_inference_usd"], 6) == 0.000022  # the seed's 1 per 5 s
    assert slow["tokens"]["edge_per_1m_tokens_usd"] == t["edge_per_1m_tokens_usd"]


def test_cloud_token_prices_give_break_even_in_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--tokens-per-s", "100", "--cloud-per-1m-input", "0.1", "--cloud-per-1m-output", "0.4"]
    out = run_json(args, capsys)
    t = out["tokens"]
    assert t["cloud_per_1m_tokens_usd"] == 0.25  # half prompt, half completion
    assert t["break_even_tokens_per_device_day"] == pytest.approx(
        out["per_device_year_usd"] / 365 / 0.25 * 1e6,
        rel=1e-4,  # the JSON's year is rounded
    )
    # the same break-even in inferences (100 tokens each)
    assert out["break_even_per_device_day"] == pytest.approx(
        t["break_even_tokens_per_device_day"] / 100, rel=1e-6
    )
    assert cost_cli.main(args) == 0
    table = capsys.readouterr().out
    assert "edge cost per 1M tokens:  $0.04403" in table
    assert "tokens per device per day (edge is cheaper" in table


def test_token_flags_refuse_half_a_price(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost_cli.main(["--tokens-per-s", "5", "--cloud-per-1m-input", "0.1"]) == 2
    assert "go together" in capsys.readouterr().err
    assert cost_cli.main(["--tokens-per-s", "0"]) == 2
    assert "--tokens-per-s" in capsys.readouterr().err


def test_the_verdict_says_which_side_is_cheaper(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost_cli.main([*KIOSKS, "--cloud-per-1k", "1"]) == 0
    assert "edge saves $" in capsys.readouterr().out
    # 100 a day on one Pi at a cent per thousand: the cloud's $0.36 a year beats the Pi's $138.84
    assert cost_cli.main(["--per-day", "100", "--cloud-per-1k", "0.01"]) == 0
    table = capsys.readouterr().out
    assert "(edge costs $138.48 more)" in table
    assert "$-" not in table
