"""A small base model with LoRA-style parameters, and real adapter files for it.

The base is `y = x W + (x A^T) B^T` with `lora_A` [r, in] and `lora_B` [out, r] as graph inputs
that also have initializers of zeros: onnxruntime lists them as overridable initializers, so
without an adapter the model computes `x W`, and an adapter (written with onnxruntime's own
`AdapterFormat`) overrides them for one run. Shared by the unit and integration tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, save_model

IN, OUT, RANK = 16, 4, 2


def build_lora_base(path: Path, seed: int = 0) -> Path:
    """FP32 x[N,16] -> y[N,4] with zero LoRA parameters `lora_A`, `lora_B` (dynamic batch)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((IN, OUT)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["base"]),
            helper.make_node("Transpose", ["lora_A"], ["a_t"], perm=[1, 0]),
            helper.make_node("MatMul", ["x", "a_t"], ["xa"]),
            helper.make_node("Transpose", ["lora_B"], ["b_t"], perm=[1, 0]),
            helper.make_node("MatMul", ["xa", "b_t"], ["delta"]),
            helper.make_node("Add", ["base", "delta"], ["y"]),
        ],
        "lora_base",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", IN]),
            helper.make_tensor_value_info("lora_A", TensorProto.FLOAT, [RANK, IN]),
            helper.make_tensor_value_info("lora_B", TensorProto.FLOAT, [OUT, RANK]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUT])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.zeros((RANK, IN), np.float32), "lora_A"),
            numpy_helper.from_array(np.zeros((OUT, RANK), np.float32), "lora_B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save_model(model, str(path))
    return path


def write_adapter(path: Path, params: dict[str, np.ndarray]) -> Path:
    """An adapter file in onnxruntime's adapter format holding `params`."""
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()})
    fmt.export_adapter(str(path))
    return path


def lora_adapter(path: Path, seed: int) -> Path:
    """A rank-2 adapter for the base model, different for each seed."""
    rng = np.random.default_rng(100 + seed)
    return write_adapter(
        path,
        {
            "lora_A": rng.standard_normal((RANK, IN)).astype(np.float32),
            "lora_B": rng.standard_normal((OUT, RANK)).astype(np.float32),
        },
    )


def direct_run(model: Path, x: np.ndarray, adapter: Path | None = None) -> np.ndarray:
    """The reference: a plain onnxruntime session, with the adapter activated when given."""
    quiet = ort.SessionOptions()
    quiet.log_severity_level = 3  # the LoRA inputs-with-initializers warning is intended here
    session = ort.InferenceSession(str(model), quiet, providers=["CPUExecutionProvider"])
    options = ort.RunOptions()
    if adapter is not None:
        loaded = ort.LoraAdapter()
        loaded.Load(str(adapter))
        options.add_active_adapter(loaded)
    y: np.ndarray = session.run(["y"], {"x": x}, options)[0]
    return y
