"""Every small ONNX model the tests serve, built with `onnx.helper` (no downloads).

One home for the builders, so a suite that needs "an identity model" or "the LoRA base" finds
it here instead of growing its own copy. Each builder writes the model to `path` and returns
it. Only onnx, numpy and onnxruntime are imported: the module also loads as plain `onnxmodels`
when `tests/` is on sys.path (as the benchmarks put it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import GraphProto, TensorProto, helper, numpy_helper, save_model


def save_graph(graph: GraphProto, path: Path, opset: int = 17) -> Path:
    """Wrap `graph` in a model (IR 8, default domain at `opset`) and write it to `path`."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    save_model(model, str(path))
    return path


# -- serving: one model per datatype and batching case -----------------------------------------


def build_mlp(
    path: Path, in_dim: int = 64, hidden: int = 256, out: int = 10, seed: int = 0
) -> Path:
    """FP32 MLP x[N,in] -> relu -> y[N,out], dynamic batch: the micro-batching case."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((in_dim, hidden)) / np.sqrt(in_dim)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, out)) / np.sqrt(hidden)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return save_graph(graph, path)


def build_cnn(path: Path, size: int = 32, channels: int = 8, classes: int = 10) -> Path:
    """uint8 image [N,3,S,S] -> cast/scale -> conv -> relu -> pool -> dense -> FP32 [N,classes]."""
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.1
    dense = rng.standard_normal((channels, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["f", "scale"], ["s"]),
            helper.make_node("Conv", ["s", "kernel"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["flat"]),
            helper.make_node("MatMul", ["flat", "dense"], ["logits"]),
        ],
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [
            numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
            numpy_helper.from_array(kernel, "kernel"),
            numpy_helper.from_array(dense, "dense"),
        ],
    )
    return save_graph(graph, path)


def build_fp16(path: Path, dim: int = 8) -> Path:
    """FP16 in, FP16 out: y = x * 2 + 1 (FP16 travels raw only)."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["m"]),
            helper.make_node("Add", ["m", "one"], ["y"]),
        ],
        "fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", dim])],
        [
            numpy_helper.from_array(np.array(2, dtype=np.float16), "two"),
            numpy_helper.from_array(np.array(1, dtype=np.float16), "one"),
        ],
    )
    return save_graph(graph, path)


def build_two_inputs(path: Path) -> Path:
    """Fixed shapes, no batch dim: a[2,3] INT64 + b[2,3] INT64 -> sum INT64, prod FP64."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["p"]),
            helper.make_node("Cast", ["p"], ["prod"], to=TensorProto.DOUBLE),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, [2, 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [2, 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.INT64, [2, 3]),
            helper.make_tensor_value_info("prod", TensorProto.DOUBLE, [2, 3]),
        ],
    )
    return save_graph(graph, path)


# -- routing, rollout and deployment: models whose answer says who computed it ------------------


def build_identity(path: Path, dim: int = 4) -> Path:
    """Empty compute: y = x, FP32 [N, dim] (routing tests measure the path, not the model)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dim])],
    )
    return save_graph(graph, path)


def build_strings(path: Path) -> Path:
    """y = s, BYTES [N]: what a string model does with a huge BYTES request (nothing)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["y"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["N"])],
    )
    return save_graph(graph, path)


def build_classifier(path: Path, scale: float) -> Path:
    """probs[N,2] = Softmax(x[N,2] @ (scale * I)): sure for one-hot x, unsure for flat x."""
    w = (np.eye(2) * scale).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"]), helper.make_node("Softmax", ["z"], ["probs"], axis=-1)],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(w, "W")],
    )  # fmt: skip
    return save_graph(graph, path)


def build_scale(path: Path, k: float, bias: float = 0.0) -> Path:
    """y = k * x + bias, FP32 [N, 2] (a different bias of 0 makes a different build)."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [
            numpy_helper.from_array(np.array(k, dtype=np.float32), "k"),
            numpy_helper.from_array(np.array(bias, dtype=np.float32), "b"),
        ],
    )
    return save_graph(graph, path)


def build_adder(path: Path) -> Path:
    """y = x + 1, FP32 [1, 4], opset 13: the model the kind cluster serves end to end."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1, 4], [1.0] * 4)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "adder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[one],
    )
    return save_graph(graph, path, opset=13)


# -- LoRA: a base model with overridable parameters, and real adapter files for it --------------
#
# The base is `y = x W + (x A^T) B^T` with `lora_A` [r, in] and `lora_B` [out, r] as graph inputs
# that also have initializers of zeros: onnxruntime lists them as overridable initializers, so
# without an adapter the model computes `x W`, and an adapter (written with onnxruntime's own
# `AdapterFormat`) overrides them for one run.

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
    return save_graph(graph, path)


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
