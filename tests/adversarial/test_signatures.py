"""Attack 5: the caller chose the trust anchor.

Before issue 16 a LoadModel carried its own `public_key`, so a signature made with the
caller's own key, accompanied by that key, loaded. Now the keys are the agent's configuration
(`--trusted-keys`, from the pool's Secret); a key in the request can only name one of them,
and `--require-signatures` refuses unsigned artifacts.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hatswarm_agent.control.signing import generate_keypair, sign_digest
from hatswarm_agent.protocol.v1 import control_pb2

from tests.adversarial.conftest import Files, code_of, control, mlp_request, oip
from tests.agentproc import start_agent

pytestmark = pytest.mark.integration

READY = control_pb2.MODEL_STATE_READY


def load(address: str, **fields: str) -> control_pb2.ModelStatus:
    """LoadModel; a refusal up front counts as the FAILED status it stands for."""
    try:
        reply: control_pb2.ModelStatus = control(address).LoadModel(
            control_pb2.LoadModelRequest(**fields), timeout=30
        )
    except grpc.RpcError as err:
        return control_pb2.ModelStatus(
            name=fields.get("name", ""),
            state=control_pb2.MODEL_STATE_FAILED,
            reason=f"{err.code().name}: {err.details()}",
        )
    return reply


def test_a_key_that_comes_with_the_request_is_never_trusted(mlp: Path, http_files: Files) -> None:
    uri, digest = http_files.add("/mlp.onnx", mlp.read_bytes())
    private, public = generate_keypair()  # the attacker's own
    with start_agent([]) as agent:
        reply = load(
            agent.address, name="mlp", uri=uri, sha256=digest,
            signature=sign_digest(private, digest), public_key=public,
        )  # fmt: skip
        assert reply.state != READY, reply  # before issue 16: READY
        assert "signature" in reply.reason
        infer = oip(agent.address).ModelInfer
        assert code_of(lambda: infer(mlp_request(), timeout=10)) != grpc.StatusCode.OK


def test_only_the_agents_trusted_keys_count_and_signatures_can_be_required(
    tmp_path: Path, mlp: Path, http_files: Files
) -> None:
    uri, digest = http_files.add("/mlp.onnx", mlp.read_bytes())
    trusted_private, trusted_public = generate_keypair()
    attacker_private, attacker_public = generate_keypair()
    keys = tmp_path / "trusted-keys"  # a mounted Secret: one key a file
    keys.mkdir()
    (keys / "publisher").write_text(trusted_public)
    with start_agent(["--trusted-keys", str(keys), "--require-signatures"]) as agent:
        a = agent.address
        unsigned = load(a, name="m1", uri=uri, sha256=digest)
        assert unsigned.state != READY and "requires signed" in unsigned.reason
        forged = sign_digest(attacker_private, digest)
        for hint in (attacker_public, ""):
            reply = load(a, name="m2", uri=uri, sha256=digest, signature=forged, public_key=hint)
            assert reply.state != READY and "trust" in reply.reason, reply
        good = sign_digest(trusted_private, digest)
        assert load(a, name="m3", uri=uri, sha256=digest, signature=good).state == READY
        hinted = load(
            a, name="m4", uri=uri, sha256=digest, signature=good, public_key=trusted_public
        )
        assert hinted.state == READY
