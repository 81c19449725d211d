"""An unmodified tritonclient.grpc client round-trips against the agent.

tritonclient's stubs and ours both define protobuf package `inference`, so the client runs in
its own process and hands back its numpy results through an .npz file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.agentproc import AgentProcess

pytestmark = pytest.mark.integration

CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tc

address, inputs_path, out_path = sys.argv[1:4]
data = np.load(inputs_path)
c = tc.InferenceServerClient(address)
report = {
    "live": c.is_server_live(), "ready": c.is_server_ready(),
    "model_ready": c.is_model_ready("cnn", "1"),
    "meta_inputs": [(i.name, i.datatype, list(i.shape)) for i in c.get_model_metadata("cnn").inputs],
}
out = {}
def infer(model, name, dtype, arr, **kw):
    i = tc.InferInput(name, list(arr.shape), dtype)
    i.set_data_from_numpy(arr)
    return c.infer(model, [i], **kw)
r = infer("cnn", "image", "UINT8", data["image"], model_version="1", request_id="rid-1",
          parameters={"tenant": 1, "note": "x"}, priority=1)
report["id"] = r.get_response().id
report["version"] = r.get_response().model_version
out["logits"] = r.as_numpy("logits")
out["y_mlp"] = infer("mlp", "x", "FP32", data["x"]).as_numpy("y")
out["y_fp16"] = infer("fp16", "x", "FP16", data["h"]).as_numpy("y")
try:
    infer("mlp", "x", "FP64", data["x"].astype(np.float64))
except tc.InferenceServerException as e:
    report["bad_dtype"] = [e.status(), e.message()]
np.savez(out_path, **out)
print(json.dumps(report))
"""


def test_tritonclient_round_trip(agent: AgentProcess, model_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    inputs = {
        "image": rng.integers(0, 255, (3, 3, 32, 32), dtype=np.uint8),
        "x": rng.standard_normal((4, 64)).astype(np.float32),
        "h": rng.standard_normal((2, 8)).astype(np.float16),
    }
    np.savez(tmp_path / "in.npz", **inputs)
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, agent.address, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["live"] and report["ready"] and report["model_ready"]
    assert report["meta_inputs"] == [["image", "UINT8", [-1, 3, 32, 32]]]
    assert (report["id"], report["version"]) == ("rid-1", "1")
    assert report["bad_dtype"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "datatype FP64, expected FP32" in report["bad_dtype"][1]
    out = np.load(tmp_path / "out.npz")

    def run(name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        sess = ort.InferenceSession(
            str(model_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"]
        )
        return sess.run(None, feeds)[0]  # type: ignore[no-any-return]

    np.testing.assert_array_equal(out["logits"], run("cnn", {"image": inputs["image"]}))
    np.testing.assert_array_equal(out["y_mlp"], run("mlp", {"x": inputs["x"]}))
    assert out["y_fp16"].dtype == np.float16
    np.testing.assert_array_equal(out["y_fp16"], run("fp16", {"x": inputs["h"]}))
