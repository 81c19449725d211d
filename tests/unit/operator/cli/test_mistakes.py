"""Every subcommand's common mistakes: exit 2 (usage) or 1 (failure), one line on stderr that
names what was wrong, and no traceback. In-process through the `hatswarm` dispatcher, plus the
real console script for a few (a subprocess proves no traceback escapes the process).

Mistakes that need a socket (a dead URL, a port in use) are in
tests/integration/local/test_cli_runtime.py and tests/integration/agent/test_cli_errors.py.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from hatswarm_operator.cli.main import main

ROOT = Path(__file__).resolve().parents[4]
POOL = ROOT / "examples" / "pool.yaml"
MODEL = ROOT / "examples" / "model-defects.yaml"  # EdgeModel "defects" in pool floor-1
HATSWARM = Path(sys.executable).parent / "hatswarm"

DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Paths the cases name as {placeholders}."""
    (tmp_path / "deployment.yaml").write_text(DEPLOYMENT)
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "broken.yaml").write_text("kind: [unclosed\n  - x: {\n")
    (tmp_path / "measured.json").write_text("[1, 2]")
    return {"tmp": str(tmp_path), "pool": str(POOL), "model": str(MODEL)}


# (argv, exit code, a fragment the one line must contain)
CASES: list[tuple[str, int, str]] = [
    # the dispatcher
    ("nope", 2, "unknown command 'nope'"),
    ("valdiate -f x", 2, "did you mean `validate`?"),
    # validate
    ("validate", 2, "the following arguments are required: -f/--filename"),
    ("validate -f {tmp}/missing.yaml", 2, "cannot read {tmp}/missing.yaml"),
    ("validate -f {tmp}/deployment.yaml", 1, "Deployment/web (apps/v1) is not a hatswarm kind"),
    ("validate -f {tmp}/empty.yaml", 1, "{tmp}/empty.yaml: no objects"),
    ("validate -f {tmp}/broken.yaml", 1, "{tmp}/broken.yaml: not YAML"),
    # cost
    ("cost", 2, "one of the arguments --per-second --per-day is required"),
    ("cost --per-day ten", 2, "argument --per-day: not a number: 'ten'"),
    ("cost --per-day 1 -f {tmp}/missing.yaml", 2, "cannot read {tmp}/missing.yaml"),
    ("cost --per-day 1 -f {tmp}/deployment.yaml", 2, "has no document of kind InferencePool"),
    ("cost --per-day 1 -o xml", 2, "argument -o/--output: invalid choice: 'xml'"),
    ("cost --per-day 1 --plot {tmp}/no/dir/cost.png", 1, "cannot write {tmp}/no/dir/cost.png"),
    ("cost incident --from yesterday", 2, "not a time: 'yesterday'"),
    ("cost incident", 2, "the following arguments are required: --from"),
    ("cost report --from now-1h", 2, "the following arguments are required: --out"),
    ("cost report --from now-1h --out {tmp} -f {tmp}/missing.yaml", 2, "cannot read"),
    # plan
    ("plan -f {pool} --load yolo", 2, "--load 'yolo': expected MODEL=RATE"),
    ("plan -f {tmp}/missing.yaml --load a=1", 2, "cannot read {tmp}/missing.yaml"),
    ("plan -f {pool} -f {model} --load nope=1", 2, "--load names models with no EdgeModel"),
    ("plan -f {pool} -f {model} --load defects=1 --measured {tmp}/none.json", 2, "--measured"),
    ("plan -f {pool} -f {model} --load defects=1 --measured {tmp}/measured.json", 2, "{{model:"),
    ("plan -f {pool} -f {model} --load defects=1 --fps a=3", 2, "expected MODEL:ACCELERATOR=FPS"),
    # up / status
    ("up --nodes 0", 2, "--nodes must be >= 1"),
    ("up --nodes-file {tmp}/nodes.yaml", 2, "--nodes-file {tmp}/nodes.yaml: No such file"),
    ("up -f {tmp}/deployment.yaml", 2, "need exactly one InferencePool, found 0"),
    ("status --state-dir {tmp}/none", 1, "no local pool status at {tmp}/none/status.json"),
    ("status -o wide", 2, "invalid choice: 'wide'"),
    # loadtest (the ones that need no socket)
    ("loadtest --model m", 2, "the following arguments are required: --url"),
    ("loadtest --url http://pool:8001 --model m", 2, "--url wants HOST:PORT"),
    ("loadtest --url pool:8001 --model m --concurrency 0", 2, "--concurrency and --batch"),
    ("loadtest --url pool:8001 --model m --token-file {tmp}/t", 1, "--token-file: "),
    # crds, demo
    ("crds --out {tmp}/deployment.yaml/x", 1, "cannot write {tmp}/deployment.yaml/x"),
    ("crds --check --out {tmp}", 1, "out of date (run `make crds`)"),
    ("demo --clients x", 2, "unrecognized arguments"),
]


@pytest.mark.parametrize(("argv", "code", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_mistake_is_one_line(
    argv: str,
    code: int,
    fragment: str,
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(argv.format(**files).split()) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert fragment.format(**files) in err
    assert "Traceback" not in err


def test_stdin_is_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-f -` reads standard input, as kubectl does."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(POOL.read_text()))
    assert main(["validate", "-f", "-"]) == 0
    assert "InferencePool/floor-1" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO(DEPLOYMENT))
    assert main(["validate", "-f", "-"]) == 1
    assert "Deployment/web" in capsys.readouterr().err


def test_cost_help_lists_its_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "`hatswarm cost incident`" in text and "`hatswarm cost report`" in text
    assert "inferences/s per device" in text
    assert "--devices DEVICES devices in the fleet (default: 1)" in text


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (["validate", "-f", "/nonexistent/x.yaml"], 2, "cannot read /nonexistent/x.yaml"),
        (["cost", "--per-day", "x"], 2, "argument --per-day: not a number"),
        (["crds", "--out", "/proc/hatswarm"], 1, "cannot write /proc/hatswarm"),
    ],
)
def test_console_script_prints_no_traceback(argv: list[str], code: int, fragment: str) -> None:
    done = subprocess.run(
        [str(HATSWARM), *argv], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == code
    assert done.stderr.count("\n") == 1 and fragment in done.stderr, done.stderr


def test_debug_shows_the_traceback() -> None:
    done = subprocess.run(
        [str(HATSWARM), "--debug", "crds", "--out", "/proc/hatswarm"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "cannot write /proc/hatswarm" in done.stderr
