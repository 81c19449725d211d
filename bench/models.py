"""The models the node-agent benchmark serves: three built with `onnx.helper`, two real ones.

- ``cnn``: a MobileNet-v1-shaped network on a 224x224x3 uint8 NHWC image (what a camera
  gives a Pi): Cast -> scale -> Transpose to NCHW -> a stride-2 stem and depthwise-separable
  blocks with constant random weights -> global average pool -> Gemm to 1000 classes. About
  as much compute as DESIGN.md's MobileNet figure (10-15 ms for one image at 1 thread here).
- ``mlp``: float32 ``[N, 16]`` -> 64 -> 64 -> 4 with ReLU: so small that serving it is all
  per-request overhead, which is what it measures.

- ``mobilenet``: MobileNet v1 (1.0, 224) as image classifiers export it: the preprocessing in
  the graph ((x - 127.5) / 127.5 on a uint8 NHWC frame), Conv -> BatchNormalization -> ReLU6
  (Clip) in every layer (onnxruntime folds the norms at load), 1001 classes and a Softmax.

The three built ones have a dynamic batch dimension and are deterministic: the weights come
from a seeded generator, so the same seed writes byte-identical files. Two real models that
the project's tests do not use (``real_models``): SqueezeNet from the ``onnx`` package's light
test models (fixed batch 1, float32 NCHW) and RapidOCR's text-direction classifier (a small
PaddleOCR MobileNetV3 with a dynamic batch, float32 [N, 3, 48, 192]), taken from the
``rapidocr-onnxruntime`` wheel that ``pip download`` puts in a cache (no import, no install).
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import zipfile
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


MOBILENET_INPUT = "input"
MOBILENET_OUTPUT = "probabilities"
MOBILENET_CLASSES = 1001
SQUEEZENET_INPUT = "data_0"
SQUEEZENET_OUTPUT = "softmaxout_1"
OCR_CLS_INPUT = "x"
OCR_CLS_OUTPUT = "save_infer_model/scale_0.tmp_1"
RAPIDOCR_WHEEL = "rapidocr-onnxruntime==1.4.4"
_OCR_CLS_MEMBER = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"


@dataclass(frozen=True)
class BenchModels:
    """Paths of the built models, keyed the way the agent's ``--model name=path`` takes them."""

    cnn: Path
    mlp: Path
    mobilenet: Path | None = None

    def as_dict(self) -> dict[str, Path]:
        out = {"cnn": self.cnn, "mlp": self.mlp}
        if self.mobilenet is not None:
            out["mobilenet"] = self.mobilenet
        return out


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


def build_mobilenet(seed: int = 2, image_size: int = 224) -> onnx.ModelProto:
    """MobileNet v1 1.0 on uint8 NHWC frames, with BatchNormalization and ReLU6 as exported."""
    g = _GraphBuilder(seed)
    x = g.node("Cast", [MOBILENET_INPUT], to=TensorProto.FLOAT)
    x = g.node("Sub", [x, g.const("mean", np.array(127.5, dtype=np.float32))])
    x = g.node("Div", [x, g.const("std", np.array(127.5, dtype=np.float32))])
    x = g.node("Transpose", [x], perm=[0, 3, 1, 2])
    lo, hi = (
        g.const("relu6_lo", np.array(0.0, np.float32)),
        g.const("relu6_hi", np.array(6.0, np.float32)),
    )

    def conv_bn_relu6(x: str, c_in: int, c_out: int, kernel: int, stride: int, group: int) -> str:
        fan_in = c_in // group * kernel**2
        w = g.weights("w", (c_out, c_in // group, kernel, kernel), fan_in=fan_in)
        pad = kernel // 2
        y = g.node(
            "Conv", [x, w], kernel_shape=[kernel, kernel], strides=[stride, stride],
            pads=[pad, pad, pad, pad], group=group,
        )  # fmt: skip
        scale = g.const("gamma", (1.0 + 0.05 * g.rng.standard_normal(c_out)).astype(np.float32))
        bias = g.bias("beta", c_out)
        mean = g.const("mean", (0.01 * g.rng.standard_normal(c_out)).astype(np.float32))
        var = g.const("var", (1.0 + 0.1 * g.rng.random(c_out)).astype(np.float32))
        y = g.node("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-3)
        return g.node("Clip", [y, lo, hi])

    c = 32
    x = conv_bn_relu6(x, 3, c, kernel=3, stride=2, group=1)
    for c_out, stride in _MOBILENET_BLOCKS:
        x = conv_bn_relu6(x, c, c, kernel=3, stride=stride, group=c)
        x = conv_bn_relu6(x, c, c_out, kernel=1, stride=1, group=1)
        c = c_out
    x = g.node("GlobalAveragePool", [x])
    w = g.weights("fc_w", (MOBILENET_CLASSES, c, 1, 1), fan_in=c)
    x = g.node("Conv", [x, w, g.bias("fc_b", MOBILENET_CLASSES)], kernel_shape=[1, 1])
    x = g.node("Flatten", [x], axis=1)
    g.nodes.append(helper.make_node("Softmax", [x], [MOBILENET_OUTPUT], name="softmax", axis=1))
    graph = helper.make_graph(
        g.nodes,
        "hatswarm_bench_mobilenet_v1",
        [
            helper.make_tensor_value_info(
                MOBILENET_INPUT, TensorProto.UINT8, ["batch", image_size, image_size, 3]
            )
        ],
        [
            helper.make_tensor_value_info(
                MOBILENET_OUTPUT, TensorProto.FLOAT, ["batch", MOBILENET_CLASSES]
            )
        ],
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


def build_models(out_dir: Path, seed: int = 0, mobilenet: bool = True) -> BenchModels:
    """Write ``cnn.onnx``, ``mlp.onnx`` (and ``mobilenet.onnx``) into ``out_dir`` (rewritten
    only when they differ)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = BenchModels(
        cnn=out_dir / "cnn.onnx",
        mlp=out_dir / "mlp.onnx",
        mobilenet=out_dir / "mobilenet.onnx" if mobilenet else None,
    )
    built = [(paths.cnn, build_cnn(seed)), (paths.mlp, build_mlp(seed + 1))]
    if paths.mobilenet is not None:
        built.append((paths.mobilenet, build_mobilenet(seed + 2)))
    for path, model in built:
        _write(path, model.SerializeToString())
    return paths


def _write(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)


def real_models(out_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """The two real models (name -> path) and, for one that is not available, why not."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    missing: dict[str, str] = {}
    squeezenet = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"
    if squeezenet.exists():
        paths["squeezenet"] = squeezenet
    else:
        missing["squeezenet"] = f"{squeezenet} is not in this onnx {onnx.__version__}"
    target = out_dir / "ocr_cls.onnx"
    if not target.exists():
        reason = _fetch_ocr_cls(out_dir, target)
        if reason:
            missing["ocr_cls"] = reason
    if target.exists():
        paths["ocr_cls"] = target
    return paths, missing


def _fetch_ocr_cls(out_dir: Path, target: Path) -> str:
    """RapidOCR's classifier out of its wheel (pip download, no dependencies); '' when done."""
    wheels = out_dir / "wheels"
    argv = [sys.executable, "-m", "pip", "download", RAPIDOCR_WHEEL, "--no-deps"]
    argv += ["--only-binary", ":all:", "--progress-bar", "off", "-q", "-d", str(wheels)]
    found = sorted(wheels.glob("rapidocr_onnxruntime-*.whl")) if wheels.exists() else []
    if not found:
        for python in (sys.executable, "python3"):
            argv[0] = python
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.TimeoutExpired) as exc:
                reason = f"pip download {RAPIDOCR_WHEEL} failed: {exc}"
                continue
            reason = f"pip download {RAPIDOCR_WHEEL} failed: {done.stderr.strip()[-200:]}"
            if done.returncode == 0:
                break
        found = sorted(wheels.glob("rapidocr_onnxruntime-*.whl")) if wheels.exists() else []
        if not found:
            return reason
    with zipfile.ZipFile(found[-1]) as wheel:
        _write(target, wheel.read(_OCR_CLS_MEMBER))
    return ""


def cnn_input(batch: int = 1, seed: int = 0) -> np.ndarray:
    """A random uint8 NHWC image batch for the CNN."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, 224, 224, 3), dtype=np.uint8)


def float_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A random float32 NCHW image batch in [0, 1) (SqueezeNet, the OCR classifier)."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


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
