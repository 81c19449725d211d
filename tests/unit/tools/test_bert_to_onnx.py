"""tools/bert_to_onnx.py: a BERT encoder from safetensors equals transformers' BertModel math.

A tiny random BERT is written as a sentence-transformers folder would hold it (config.json,
model.safetensors, tokenizer.json); its converted ONNX graph must give what a direct numpy
transcription of BertModel's forward pass gives, padding included.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import pytest

from tests.scripts import load_script

TOOL = Path(__file__).resolve().parents[3] / "tools" / "bert_to_onnx.py"
CONFIG = {
    "model_type": "bert", "hidden_act": "gelu", "hidden_size": 16, "num_attention_heads": 4,
    "num_hidden_layers": 2, "intermediate_size": 32, "layer_norm_eps": 1e-12,
    "max_position_embeddings": 32, "type_vocab_size": 2, "vocab_size": 50,
}  # fmt: skip


def tool() -> ModuleType:
    return load_script(TOOL, "bert_to_onnx")


def random_bert(rng: np.random.Generator) -> dict[str, np.ndarray]:
    h, i, v = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["vocab_size"]
    assert isinstance(h, int) and isinstance(i, int) and isinstance(v, int)

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": r(v, h),
        "embeddings.position_embeddings.weight": r(32, h),
        "embeddings.token_type_embeddings.weight": r(2, h),
        "embeddings.LayerNorm.weight": 1 + r(h),
        "embeddings.LayerNorm.bias": r(h),
        "embeddings.position_ids": np.arange(32, dtype=np.int64)[None],
    }
    for n in range(2):
        p = f"encoder.layer.{n}."
        for name, (rows, cols) in {
            "attention.self.query": (h, h), "attention.self.key": (h, h),
            "attention.self.value": (h, h), "attention.output.dense": (h, h),
            "intermediate.dense": (i, h), "output.dense": (h, i),
        }.items():  # fmt: skip
            w[f"{p}{name}.weight"], w[f"{p}{name}.bias"] = r(rows, cols), r(rows)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"{p}{name}.weight"], w[f"{p}{name}.bias"] = 1 + r(h), r(h)
    return w


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        dtype = {"float32": "F32", "int64": "I64"}[str(array.dtype)]
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}  # fmt: skip
        blobs.append(data)
        offset += len(data)
    head = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * weight + bias


def bert(w: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """transformers' BertModel.forward, eval mode, token type 0: last_hidden_state."""
    heads, hidden = 4, 16
    d = hidden // heads
    erf = np.vectorize(math.erf)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    extended = (1.0 - mask[:, None, None, :]) * np.finfo(np.float32).min
    for n in range(2):
        p = f"encoder.layer.{n}."

        def lin(t: np.ndarray, name: str, _p: str = p) -> np.ndarray:
            out: np.ndarray = t @ w[f"{_p}{name}.weight"].T + w[f"{_p}{name}.bias"]
            return out

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(t.shape[0], t.shape[1], heads, d).transpose(0, 2, 1, 3)

        q, k, v = (split(lin(x, f"attention.self.{s}")) for s in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + extended
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = layer_norm(
            x + lin(ctx, "attention.output.dense"),
            w[f"{p}attention.output.LayerNorm.weight"],
            w[f"{p}attention.output.LayerNorm.bias"],
        )
        inner = lin(x, "intermediate.dense")
        gelu = 0.5 * inner * (1 + erf(inner / math.sqrt(2)))
        x = layer_norm(
            x + lin(gelu, "output.dense"),
            w[f"{p}output.LayerNorm.weight"],
            w[f"{p}output.LayerNorm.bias"],
        )
    return x


def test_the_converted_encoder_computes_what_bert_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    weights = random_bert(rng)
    source = tmp_path / "st"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(CONFIG))
    (source / "tokenizer.json").write_text("{}")
    write_safetensors(source / "model.safetensors", weights)

    target = tool().convert(source, tmp_path / "embed")
    assert (target / "tokenizer.json").read_text() == "{}"
    session = ort.InferenceSession(str(target / "model.onnx"))
    ids = rng.integers(0, 50, size=(3, 7)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0  # padded rows: the padding must not reach the real tokens
    mask[2, 2:] = 0
    (got,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    want = bert(weights, ids, mask.astype(np.float32))
    assert got.shape == (3, 7, 16)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # A padded row's real tokens equal the same tokens encoded alone.
    (alone,) = session.run(None, {"input_ids": ids[2:3, :2], "attention_mask": mask[2:3, :2]})
    np.testing.assert_allclose(alone[0], got[2, :2], rtol=1e-4, atol=1e-4)


def test_a_folder_without_safetensors_or_not_bert_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        tool().convert(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="only BERT"):
        tool().build_graph({**CONFIG, "model_type": "llama"}, {})
