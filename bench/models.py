"""The two models the node-agent benchmark serves, built with `onnx.helper` (no downloads).

- ``cnn``: a MobileNet-v1-shaped network on a 224x224x3 uint8 NHWC image (what a camera
  gives a Pi): Cast -> scale -> Transpose to NCHW -> a stride-2 stem and depthwise-separable
  blocks with constant random weights -> global average pool -> Gemm to 1000 classes. About
  as much compute as DESIGN.md's MobileNet figure (10-15 ms for one image at 1 thread here).
- ``mlp``: float32 ``[N, 16]`` -> 64 -> 64 -> 4 with ReLU: so small that serving it is all
  per-request overhead, which is what it measures.

Both have a dynamic batch dimension and are deterministic: the weights come from a seeded
generator, so the same seed writes byte-identical files.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
CNN_INPUT = "image"
CNN_OUTPUT = "logits"
MLP_INPUT = "features"
MLP_OUTPUT = "scores"
MLP_FEATURES = 16
MLP_CLASSES = 4
CNN_CLASSES = 1000

# (output channels, stride) of each depthwise-separable block, MobileNet v1 at width 1.0.
_MOBILENET_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


@dataclass(frozen=True)
class BenchModels:
    """Paths of the built models, keyed the way the agent's ``--model name=path`` takes them."""

    cnn: Path
    mlp: Path

    def as_dict(self) -> dict[str, Path]:
        return {"cnn": self.cnn, "mlp": self.mlp}


class _GraphBuilder:
    """Accumulates nodes and constant initializers with unique names."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def weights(self, prefix: str, shape: tuple[int, ...], fan_in: int) -> str:
        # He-initialised so activations keep a sane scale through the depth.
        std = np.sqrt(2.0 / fan_in)
        return self.const(prefix, (self.rng.standard_normal(shape) * std).astype(np.float32))

    def bias(self, prefix: str, size: int) -> str:
        return self.const(prefix, (self.rng.standard_normal(size) * 0.01).astype(np.float32))

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name("n"), **attrs))
        return out

    def conv_relu(
        self, x: str, c_in: int, c_out: int, kernel: int, stride: int, group: int = 1
    ) -> str:
        fan_in = c_in // group * kernel**2
        w = self.weights("w", (c_out, c_in // group, kernel, kernel), fan_in=fan_in)
        b = self.bias("b", c_out)
        pad = kernel // 2
        y = self.node(
            "Conv",
            [x, w, b],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            group=group,
        )
        return self.node("Relu", [y])


def _channels(c: int, width: float) -> int:
    return max(8, round(c * width / 8) * 8)


def build_cnn(seed: int = 0, width: float = 1.0, image_size: int = 224) -> onnx.ModelProto:
    """A MobileNet-v1-shaped classifier on NHWC uint8 images with a dynamic batch."""
    g = _GraphBuilder(seed)
    x = g.node("Cast", [CNN_INPUT], to=TensorProto.FLOAT)
    x = g.node("Mul", [x, g.const("scale", np.array(1.0 / 255.0, dtype=np.float32))])
    x = g.node("Transpose", [x], perm=[0, 3, 1, 2])
    c = _channels(32, width)
    x = g.conv_relu(x, 3, c, kernel=3, stride=2)
    for c_out, stride in _MOBILENET_BLOCKS:
        x = g.conv_relu(x, c, c, kernel=3, stride=stride, group=c)  # depthwise
        c_next = _channels(c_out, width)
        x = g.conv_relu(x, c, c_next, kernel=1, stride=1)  # pointwise
        c = c_next
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x], axis=1)
    w = g.weights("fc_w", (c, CNN_CLASSES), fan_in=c)
    y = g.node("Gemm", [x, w, g.bias("fc_b", CNN_CLASSES)])
    g.nodes.append(helper.make_node("Identity", [y], [CNN_OUTPUT], name="output"))
    graph = helper.make_graph(
        g.nodes,
        "hatswarm_bench_cnn",
        [
            helper.make_tensor_value_info(
                CNN_INPUT, TensorProto.UINT8, ["batch", image_size, image_size, 3]
            )
        ],
        [helper.make_tensor_value_info(CNN_OUTPUT, TensorProto.FLOAT, ["batch", CNN_CLASSES])],
        initializer=g.initializers,
    )
    return _finish(graph)


def build_mlp(seed: int = 1) -> onnx.ModelProto:
    """float32 [N, 16] -> 64 -> 64 -> 4, ReLU between layers, dynamic batch."""
    g = _GraphBuilder(seed)
    x = MLP_INPUT
    sizes = (MLP_FEATURES, 64, 64, MLP_CLASSES)
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        x = g.node("Gemm", [x, g.weights("w", (n_in, n_out), fan_in=n_in), g.bias("b", n_out)])
        if i < len(sizes) - 2:
            x = g.node("Relu", [x])
    g.nodes.append(helper.make_node("Identity", [x], [MLP_OUTPUT], name="output"))
    graph = helper.make_graph(
        g.nodes,
        "hatswarm_bench_mlp",
        [helper.make_tensor_value_info(MLP_INPUT, TensorProto.FLOAT, ["batch", MLP_FEATURES])],
        [helper.make_tensor_value_info(MLP_OUTPUT, TensorProto.FLOAT, ["batch", MLP_CLASSES])],
        initializer=g.initializers,
    )
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="hatswarm-bench",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def build_models(out_dir: Path, seed: int = 0) -> BenchModels:
    """Write ``cnn.onnx`` and ``mlp.onnx`` into ``out_dir`` (rewritten only when they differ)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = BenchModels(cnn=out_dir / "cnn.onnx", mlp=out_dir / "mlp.onnx")
    for path, model in ((paths.cnn, build_cnn(seed)), (paths.mlp, build_mlp(seed + 1))):
        data = model.SerializeToString()
        if not path.exists() or path.read_bytes() != data:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
    return paths


def cnn_input(batch: int = 1, seed: int = 0) -> np.ndarray:
    """A random uint8 NHWC image batch for the CNN."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, 224, 224, 3), dtype=np.uint8)


def mlp_input(batch: int = 1, seed: int = 0) -> np.ndarray:
    """A random float32 feature batch for the MLP."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, MLP_FEATURES)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("bench/out/models"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, path in build_models(args.out_dir, args.seed).as_dict().items():
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
