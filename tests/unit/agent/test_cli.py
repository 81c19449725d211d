"""`hatswarm-agent`'s common mistakes: exit 2 with one line naming the flag and value, no
traceback (in-process: each is refused before a port is opened). A port already in use is in
tests/integration/agent/test_cli_errors.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hatswarm_agent.cli import main


def agent_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        return int(exc.code or 0)


CASES: list[tuple[list[str], str]] = [
    (["--model", "{tmp}/flat.onnx"], "--model wants NAME=URI, got '{tmp}/flat.onnx' (e.g. flat="),
    (["--model", "x={tmp}/none.onnx"], "--model x={tmp}/none.onnx: no such file {tmp}/none.onnx"),
    (["--model", "x=file://{tmp}/none.onnx"], "no such file {tmp}/none.onnx"),
    (["--model", "x={tmp}/flat.onnx#md5=1"], "--model fragment must be #sha256=HEX"),
    (["--model-dir", "{tmp}/none"], "--model-dir {tmp}/none does not exist"),
    (["--model-dir", "{tmp}/empty"], "--model-dir {tmp}/empty holds no model"),
    (["--model-dir", "{tmp}/flat.onnx"], "--model-dir {tmp}/flat.onnx is not a directory"),
    (["--port", "99999"], "argument --port: port 99999 is outside 0..65535"),
    (["--port", "http"], "argument --port: not a port number: 'http'"),
    (["--strict-readiness", "maybe"], "want true or false, got 'maybe'"),
    (["--option", "threads"], "--option wants KEY=VALUE, got 'threads'"),
    (["--peer", "bad"], "--peer wants MODEL=HOST:PORT"),
    (["--routing-table", "{tmp}/none.json"], "--routing-table {tmp}/none.json: no such file"),
    (["--tls-cert", "{tmp}/c.pem", "--tls-key", "{tmp}/k.pem"], "--tls-cert {tmp}/c.pem: no such"),
    (["--auth-token-file", "{tmp}/token"], "--auth-token-file {tmp}/token: no such file"),
    (["--accelerator", "tpu"], "argument --accelerator: invalid choice: 'tpu'"),
    # (A pinned --backend hailo without the chip is not a mistake: the agent stays up and says
    # why in NodeStatus, issue 13; tests/integration/agent/test_backend_choice.py.)
    (["--control-token-file", "{tmp}/control"], "--control-token-file {tmp}/control: no such"),
]


@pytest.mark.parametrize(("argv", "fragment"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_mistake_is_one_line(
    argv: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "flat.onnx").write_bytes(b"onnx")
    (tmp_path / "empty").mkdir()
    assert agent_main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hatswarm-agent: error: ") and err.count("\n") == 1, err
    assert fragment.format(tmp=tmp_path) in err
    assert "Traceback" not in err


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "OIP + control gRPC port (0 = any) (default: 8001)" in text
    assert "--node-name NODE_NAME (default: local)" in text
    assert "(default: true, as tritonserver" in text
