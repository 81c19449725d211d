"""The validation gate reaches agents of a pool that requires tokens: it presents the
operator's control token, which opens inference too (a client's token never opens control)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hatswarm_operator.api.edgemodel import ValidationGate
from hatswarm_operator.control.credentials import AgentCredentials
from hatswarm_operator.control.gate_runner import run_gate
from hatswarm_operator.core import gate as vg

from tests.agentproc import start_agent
from tests.onnxmodels import build_scale

from .test_canary import GATE

pytestmark = pytest.mark.integration


async def test_gate_presents_the_operators_token(tmp_path: Path) -> None:
    model = build_scale(tmp_path / "m.onnx", 2.0)
    token = tmp_path / "token"
    token.write_text("s3cret\n")  # the clients' token
    control = tmp_path / "control"
    control.write_text("operator-only\n")  # what the operator presents: it opens the gate too
    gate = vg.gate_from_spec(ValidationGate.model_validate(GATE))
    with start_agent(
        ["--model", f"m:1={model}", "--auth-token-file", str(token),
         "--control-token-file", str(control)]
    ) as agent:  # fmt: skip
        ok = await run_gate(
            agent.address, "m", "1", gate, credentials=AgentCredentials(token="operator-only")
        )
        refused = await run_gate(agent.address, "m", "1", gate)
    assert ok.passed, ok.message
    assert not refused.passed
    assert "UNAUTHENTICATED" in refused.message
