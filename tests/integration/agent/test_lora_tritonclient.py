"""An unmodified tritonclient picks a LoRA adapter with the request parameter `adapter`.

tritonclient's stubs and ours both define protobuf package `inference`, so the client runs in
its own process and hands its numpy results back through an .npz file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc

from tests.agentproc import start_agent
from tests.onnxmodels import IN, build_lora_base, direct_run, lora_adapter

pytestmark = pytest.mark.integration

CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tc

address, inputs_path, out_path = sys.argv[1:4]
x = np.load(inputs_path)["x"]
c = tc.InferenceServerClient(address)
def infer(**kw):
    i = tc.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return c.infer("lm", [i], model_version="1", **kw).as_numpy("y")
out = {"base": infer(), "a": infer(parameters={"adapter": "a"}),
       "b": infer(parameters={"adapter": "b"})}
report = {}
try:
    infer(parameters={"adapter": "zz"})
except tc.InferenceServerException as e:
    report["unknown"] = [e.status(), e.message()]
np.savez(out_path, **out)
print(json.dumps(report))
"""


def test_tritonclient_selects_adapters(tmp_path: Path) -> None:
    base = build_lora_base(tmp_path / "base.onnx")
    adapters = {n: lora_adapter(tmp_path / f"{n}.onnx_adapter", seed=i) for i, n in enumerate("ab")}
    x = np.random.default_rng(4).standard_normal((2, IN)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    roots = ["--allow-file-root", str(tmp_path)]
    with start_agent(["--state-dir", str(tmp_path / "state"), *roots]) as agent:
        with grpc.insecure_channel(agent.address) as ch:
            loaded = control_pb2_grpc.AgentControlStub(ch).LoadModel(
                control_pb2.LoadModelRequest(
                    name="lm", version="1", uri=str(base), sha256=digest(base),
                    adapters=[
                        control_pb2.AdapterArtifact(name=n, uri=str(p), sha256=digest(p))
                        for n, p in adapters.items()
                    ],
                )
            )  # fmt: skip
        assert list(loaded.adapters) == ["a", "b"]
        proc = subprocess.run(
            [sys.executable, "-c", CLIENT, agent.address, str(tmp_path / "in.npz"),
             str(tmp_path / "out.npz")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["unknown"][0] == "StatusCode.NOT_FOUND"
    assert "adapter 'zz' is not known for model 'lm' version '1'" in report["unknown"][1]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["base"], direct_run(base, x), rtol=1e-5, atol=1e-5)
    for name, path in adapters.items():
        np.testing.assert_allclose(out[name], direct_run(base, x, path), rtol=1e-5, atol=1e-5)
        assert not np.allclose(out[name], out["base"])
