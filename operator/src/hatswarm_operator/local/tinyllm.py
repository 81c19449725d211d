"""A tiny generative model (and an embedding model) written at run time: the demo's bundled
model (`hatswarm demo`) and the tests' (tests/genaimodels.py), with no hub download.

`build_genai_model` writes an onnxruntime-genai model folder with the graph the genai model
builder (microsoft/onnxruntime-genai: src/python/py/models/builders/base.py) emits for a
Llama-style decoder on the CPU:

    input_ids -> Gather(embed_tokens)
    per layer: SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization (RMSNorm)
               q/k/v MatMul -> GroupQueryAttention (KV cache, rotary inside, do_rotary=1)
               o_proj MatMul -> SkipSimplifiedLayerNormalization
               SwiGLU MLP: gate MatMul -> Sigmoid * gate (SiLU) * up MatMul -> down MatMul
    final SkipSimplifiedLayerNormalization -> lm_head MatMul -> logits

with the attention-mask subgraph (ReduceSum - 1 -> seqlens_k, Shape[1] -> total_seq_len),
KV cache inputs `past_key_values.%d.key/value` and outputs `present.%d.key/value`
([batch, kv_heads, seq, head_size]), `past_present_share_buffer` as the builder sets it for
GroupQueryAttention, a `genai_config.json`, and a byte-level BPE tokenizer trained with the
`tokenizers` package (`tokenizer.json` + `tokenizer_config.json` with a ChatML chat template).
Weights are seeded random numbers, so greedy output is deterministic; the whole folder is
written in a few milliseconds.

`build_embedding_model` writes a tiny encoder (embeddings + one self-attention block) whose
output `last_hidden_state` an embedding backend mean-pools, with the same tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

Floats = npt.NDArray[Any]

# Text the tokenizer is trained on: its merges are whole words of the prompts the tests use.
CORPUS = [
    "hello world, the pool serves tokens at the edge.",
    "a raspberry pi with a hailo npu answers quickly.",
    "the quick brown fox jumps over the lazy dog.",
    "once upon a time there was a tiny model on a tiny board.",
    "stream the answer token by token to the client.",
]
EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [EOS, IM_START, IM_END]

# ChatML, as Qwen2 models ship it in tokenizer_config.json.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyDecoder:
    """The shape of the tiny decoder; every field lands in genai_config.json."""

    vocab_size: int = 320
    hidden_size: int = 64
    num_heads: int = 4
    num_kv_heads: int = 2
    num_layers: int = 2
    intermediate_size: int = 128
    context_length: int = 256
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    # > 0: the linear layers (and lm_head) as int4 MatMulNBits with this block size, as the
    # model builder's int4 CPU export writes them (random packed weights: big shapes build fast).
    int4_block_size: int = 0

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


def write_tokenizer(folder: Path, vocab_size: int, *, chat_template: str | None) -> dict[str, int]:
    """A byte-level BPE tokenizer (GPT-2 style) trained on CORPUS; returns the special ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    ids: dict[str, int] = {}
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        assert token_id is not None  # special tokens always get an id
        ids[token] = token_id
    config: dict[str, object] = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": EOS,
        "eos_token": IM_END if chat_template else EOS,
        "pad_token": EOS,
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256,
        "added_tokens_decoder": {
            str(ids[token]): {"content": token, "special": True} for token in SPECIAL_TOKENS
        },
    }
    if chat_template:
        config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return ids


def _linear(rng: np.random.Generator, fan_in: int, fan_out: int) -> Floats:
    weights: Floats = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
    return weights


def _rope_caches(shape: TinyDecoder) -> tuple[Floats, Floats]:
    """cos/sin caches [context_length, head_size / 2], as the builder computes them."""
    dim = shape.head_size
    inv_freq = 1.0 / (shape.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    freqs = np.outer(np.arange(shape.context_length, dtype=np.float64), inv_freq)
    return np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)


def _matmul_int4(
    node: Any,
    init: Any,
    rng: np.random.Generator,
    name: str,
    x: str,
    weight_name: str,
    fan_in: int,
    fan_out: int,
    shape: TinyDecoder,
) -> str:
    """x @ W with W as 4-bit blocks (com.microsoft MatMulNBits, symmetric, zero point 8):
    random nibbles, scales that keep the output's variance near the input's."""
    block = shape.int4_block_size
    if fan_in % block:
        raise ValueError(f"{weight_name}: {fan_in} inputs are not a multiple of block {block}")
    blocks = fan_in // block
    packed = rng.integers(0, 256, (fan_out, blocks, block // 2), dtype=np.uint8)
    # uniform nibbles -8..7 have a standard deviation of about 4.6
    scales = np.full((fan_out * blocks,), 1.0 / (4.6 * np.sqrt(fan_in)), np.float32)
    return str(
        node(
            "MatMulNBits",
            [x, init(f"{weight_name}.int4", packed), init(f"{weight_name}.scales", scales)],
            name.replace("MatMul", "MatMulNBits"),
            domain="com.microsoft",
            K=fan_in,
            N=fan_out,
            bits=4,
            block_size=block,
            accuracy_level=4,
        )
    )


def build_decoder_graph(
    shape: TinyDecoder, seed: int, usable_vocab: int | None = None
) -> onnx.ModelProto:
    """The decoder-only ONNX graph onnxruntime-genai runs (see the module docstring).

    `usable_vocab` below `shape.vocab_size` (a real model's vocabulary with the small test
    tokenizer) masks the logits of the ids the tokenizer does not have, so random weights
    generate text that decodes."""
    rng = np.random.default_rng(seed)
    h, kvh, hs = shape.hidden_size, shape.num_kv_heads, shape.head_size
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def init(name: str, array: Floats) -> str:
        inits.append(numpy_helper.from_array(array, name))
        return name

    def node(op: str, inputs: list[str], name: str, domain: str = "", **attrs: Any) -> str:
        out = f"{name}/output_0"
        nodes.append(helper.make_node(op, inputs, [out], name=name, domain=domain, **attrs))
        return out

    init("/model/constants/INT64/[1]", np.array([1], np.int64))
    init("/model/constants/INT64/1", np.array(1, np.int64))
    cos, sin = _rope_caches(shape)
    init("cos_cache", cos)
    init("sin_cache", sin)

    # Attention mask -> the two lengths GroupQueryAttention needs.
    base = "/model/attn_mask_reformat/attn_mask_subgraph"
    summed = node(
        "ReduceSum",
        ["attention_mask", "/model/constants/INT64/[1]"],
        f"{base}/ReduceSum",
        keepdims=0,
    )
    minus_one = node("Sub", [summed, "/model/constants/INT64/[1]"], f"{base}/Sub")
    seqlens_k = node("Cast", [minus_one], f"{base}/Sub/Cast", to=TensorProto.INT32)
    mask_shape = node("Shape", ["attention_mask"], f"{base}/Shape")
    total = node("Gather", [mask_shape, "/model/constants/INT64/1"], f"{base}/Gather", axis=0)
    total_seq_len = node("Cast", [total], f"{base}/Gather/Cast", to=TensorProto.INT32)

    embed = init(
        "model.embed_tokens.weight",
        rng.standard_normal((shape.vocab_size, h)).astype(np.float32),
    )
    hidden = node("Gather", [embed, "input_ids"], "/model/embed_tokens/Gather")

    def rms_norm(name: str, x: str, skip: str | None, weight: str) -> tuple[str, str]:
        """(normalized, residual sum): SimplifiedLayerNormalization or its Skip form."""
        if skip is None:
            out = node(
                "SimplifiedLayerNormalization",
                [x, weight],
                name,
                axis=-1,
                epsilon=shape.rms_eps,
                stash_type=1,
            )
            return out, x
        out0, out3 = f"{name}/output_0", f"{name}/output_3"
        nodes.append(
            helper.make_node(
                "SkipSimplifiedLayerNormalization",
                [x, skip, weight],
                [out0, "", "", out3],
                name=name,
                domain="com.microsoft",
                epsilon=shape.rms_eps,
            )
        )
        return out0, out3

    def matmul(name: str, x: str, weight_name: str, fan_in: int, fan_out: int) -> str:
        if shape.int4_block_size:
            return _matmul_int4(node, init, rng, name, x, weight_name, fan_in, fan_out, shape)
        return node("MatMul", [x, init(weight_name, _linear(rng, fan_in, fan_out))], name)

    ones = np.ones(h, np.float32)
    residual, pending = hidden, None  # pending: the last block's output, added by the next norm
    for i in range(shape.num_layers):
        prefix = f"/model/layers.{i}"
        normed, residual = rms_norm(
            f"{prefix}/input_layernorm/{'Skip' if pending else ''}LayerNorm",
            pending or residual,
            residual if pending else None,
            init(f"model.layers.{i}.input_layernorm.weight", ones.copy()),
        )
        q = matmul(
            f"{prefix}/attn/q_proj/MatMul", normed, f"model.layers.{i}.attn.q_proj.weight", h, h
        )
        k = matmul(
            f"{prefix}/attn/k_proj/MatMul",
            normed,
            f"model.layers.{i}.attn.k_proj.weight",
            h,
            kvh * hs,
        )
        v = matmul(
            f"{prefix}/attn/v_proj/MatMul",
            normed,
            f"model.layers.{i}.attn.v_proj.weight",
            h,
            kvh * hs,
        )
        attn_name = f"{prefix}/attn/GroupQueryAttention"
        attn = f"{attn_name}/output_0"
        nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                [
                    q,
                    k,
                    v,
                    f"past_key_values.{i}.key",
                    f"past_key_values.{i}.value",
                    seqlens_k,
                    total_seq_len,
                    "cos_cache",
                    "sin_cache",
                ],
                [attn, f"present.{i}.key", f"present.{i}.value"],
                name=attn_name,
                domain="com.microsoft",
                num_heads=shape.num_heads,
                kv_num_heads=kvh,
                scale=float(1.0 / np.sqrt(hs)),
                local_window_size=-1,
                softcap=0.0,
                do_rotary=1,
                rotary_interleaved=0,
            )
        )
        o = matmul(
            f"{prefix}/attn/o_proj/MatMul", attn, f"model.layers.{i}.attn.o_proj.weight", h, h
        )
        normed, residual = rms_norm(
            f"{prefix}/post_attention_layernorm/SkipLayerNorm",
            o,
            residual,
            init(f"model.layers.{i}.post_attention_layernorm.weight", ones.copy()),
        )
        inter = shape.intermediate_size
        gate = matmul(
            f"{prefix}/mlp/gate_proj/MatMul",
            normed,
            f"model.layers.{i}.mlp.gate_proj.weight",
            h,
            inter,
        )
        up = matmul(
            f"{prefix}/mlp/up_proj/MatMul", normed, f"model.layers.{i}.mlp.up_proj.weight", h, inter
        )
        sigmoid = node("Sigmoid", [gate], f"{prefix}/mlp/act_fn/Sigmoid")
        silu = node("Mul", [gate, sigmoid], f"{prefix}/mlp/act_fn/Mul")
        mixed = node("Mul", [silu, up], f"{prefix}/mlp/Mul")
        pending = matmul(
            f"{prefix}/mlp/down_proj/MatMul",
            mixed,
            f"model.layers.{i}.mlp.down_proj.weight",
            inter,
            h,
        )

    final, _ = rms_norm(
        "/model/layers.final_norm_layernorm/SkipLayerNorm",
        pending or residual,
        residual,
        init("model.norm.weight", ones.copy()),
    )
    if shape.int4_block_size:
        logits = matmul("/lm_head/MatMul", final, "lm_head.MatMul.weight", h, shape.vocab_size)
    else:
        lm_head = init("lm_head.MatMul.weight", _linear(rng, h, shape.vocab_size) * 4.0)
        logits = node("MatMul", [final, lm_head], "/lm_head/MatMul")
    if usable_vocab is not None and usable_vocab < shape.vocab_size:
        mask = np.zeros(shape.vocab_size, np.float32)
        mask[usable_vocab:] = -1e4
        logits = node("Add", [logits, init("lm_head.vocab_mask", mask)], "/lm_head/VocabMask")
    nodes.append(helper.make_node("Identity", [logits], ["logits"], name="/lm_head/Identity"))

    kv_in: list[str | int | None] = ["batch_size", kvh, "past_sequence_length", hs]
    kv_out: list[str | int | None] = ["batch_size", kvh, "total_sequence_length", hs]
    inputs = [
        helper.make_tensor_value_info(
            "input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]
        ),
        helper.make_tensor_value_info(
            "attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]
        ),
    ]
    outputs = [
        helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, ["batch_size", "sequence_length", shape.vocab_size]
        )
    ]
    for i in range(shape.num_layers):
        for kind in ("key", "value"):
            inputs.append(
                helper.make_tensor_value_info(
                    f"past_key_values.{i}.{kind}", TensorProto.FLOAT, kv_in
                )
            )
            outputs.append(
                helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, kv_out)
            )
    graph = helper.make_graph(nodes, "tiny_decoder", inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
        producer_name="hatswarm (genai model builder graph)",
    )
    model.ir_version = 10
    return model


def genai_config(shape: TinyDecoder, special: dict[str, int], *, chat: bool) -> dict[str, object]:
    """genai_config.json as the model builder writes it for a CPU decoder with GQA."""
    eos = [special[IM_END], special[EOS]] if chat else [special[EOS]]
    return {
        "model": {
            "bos_token_id": special[EOS],
            "context_length": shape.context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": shape.head_size,
                "hidden_size": shape.hidden_size,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": shape.num_heads,
                "num_hidden_layers": shape.num_layers,
                "num_key_value_heads": shape.num_kv_heads,
            },
            "eos_token_id": eos,
            "pad_token_id": special[EOS],
            "type": "llama",
            "vocab_size": shape.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": shape.context_length,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 50,
            "top_p": 1.0,
        },
    }


def build_genai_model(
    folder: Path,
    *,
    seed: int = 0,
    shape: TinyDecoder | None = None,
    chat_template: str | None = CHAT_TEMPLATE,
) -> Path:
    """Write a complete onnxruntime-genai model folder into `folder` and return it."""
    shape = shape or TinyDecoder()
    folder.mkdir(parents=True, exist_ok=True)
    special = write_tokenizer(folder, shape.vocab_size, chat_template=chat_template)
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    graph = build_decoder_graph(shape, seed, usable_vocab=len(vocab))
    onnx.save_model(graph, str(folder / "model.onnx"))
    config = genai_config(shape, special, chat=chat_template is not None)
    (folder / "genai_config.json").write_text(json.dumps(config, indent=4))
    return folder


# -- embeddings -----------------------------------------------------------------------------

EMBED_HIDDEN = 32


def build_embedding_model(folder: Path, *, seed: int = 0, vocab_size: int = 320) -> Path:
    """An encoder folder: model.onnx (input_ids, attention_mask -> last_hidden_state
    [batch, seq, 32]: token + position embeddings, one masked self-attention, an MLP) and
    the tokenizer."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_tokenizer(folder, vocab_size, chat_template=None)
    h = EMBED_HIDDEN
    weights = {
        "tok_emb": rng.standard_normal((vocab_size, h)).astype(np.float32),
        "pos_emb": (rng.standard_normal((512, h)) * 0.1).astype(np.float32),
        "wq": _linear(rng, h, h),
        "wk": _linear(rng, h, h),
        "wv": _linear(rng, h, h),
        "w1": _linear(rng, h, 2 * h),
        "w2": _linear(rng, 2 * h, h),
        "scale": np.array(1.0 / np.sqrt(h), np.float32),
        "neg": np.array(-1e9, np.float32),
        "one": np.array(1.0, np.float32),
        "zero_i": np.array([0], np.int64),
        "one_i": np.array([1], np.int64),
        "axis1": np.array([1], np.int64),
    }
    n = helper.make_node
    nodes = [
        n("Gather", ["tok_emb", "input_ids"], ["tok"]),
        n("Shape", ["input_ids"], ["ids_shape"]),
        n("Slice", ["ids_shape", "one_i", "axis1_end"], ["seq_len"]),
        n("Squeeze", ["seq_len"], ["seq_scalar"]),
        n("Range", ["zero_s", "seq_scalar", "one_s"], ["positions"]),
        n("Gather", ["pos_emb", "positions"], ["pos"]),
        n("Add", ["tok", "pos"], ["x"]),
        n("MatMul", ["x", "wq"], ["q"]),
        n("MatMul", ["x", "wk"], ["k"]),
        n("MatMul", ["x", "wv"], ["v"]),
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["qk"]),
        n("Mul", ["qk", "scale"], ["scores"]),
        # Padding keys get -1e9: (1 - mask) * -1e9, broadcast over the query axis.
        n("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        n("Sub", ["one", "mask_f"], ["inv_mask"]),
        n("Mul", ["inv_mask", "neg"], ["bias2"]),
        n("Unsqueeze", ["bias2", "axis1"], ["bias"]),
        n("Add", ["scores", "bias"], ["masked"]),
        n("Softmax", ["masked"], ["probs"], axis=-1),
        n("MatMul", ["probs", "v"], ["ctx"]),
        n("Add", ["x", "ctx"], ["h1"]),
        n("MatMul", ["h1", "w1"], ["m1"]),
        n("Tanh", ["m1"], ["m2"]),
        n("MatMul", ["m2", "w2"], ["m3"]),
        n("Add", ["h1", "m3"], ["last_hidden_state"]),
    ]
    weights["axis1_end"] = np.array([2], np.int64)
    weights["zero_s"] = np.array(0, np.int64)
    weights["one_s"] = np.array(1, np.int64)
    graph = helper.make_graph(
        nodes,
        "tiny_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", "seq", h]
            )
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(folder / "model.onnx"))
    return folder
