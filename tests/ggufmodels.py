"""Tiny random-weight GGUF models (llama architecture) that llama.cpp loads, written with the
`gguf` package's GGUFWriter, and llama-cpp-python's own greedy output to compare a backend with.

The vocabulary is a byte-level BPE (GPT-2 style, pre-tokenizer "gpt-2") trained with
`tokenizers` on the same CORPUS as the onnxruntime-genai test models, over the ASCII bytes only:
random weights then never produce bytes that are not valid UTF-8, so the text of a generation
is exactly the concatenation of its tokens. Special tokens: <|endoftext|> (BOS, and EOS without
a chat template), <|im_start|>, <|im_end|> (EOS with the ChatML template in the metadata).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.genaimodels import CHAT_TEMPLATE, CORPUS, EOS, IM_END, SPECIAL_TOKENS

__all__ = ["CHAT_TEMPLATE", "GgufShape", "build_gguf_model", "reference_chat", "reference_text"]


@dataclass(frozen=True)
class GgufShape:
    vocab_size: int = 320
    hidden_size: int = 64
    num_heads: int = 4
    num_kv_heads: int = 2
    num_layers: int = 2
    intermediate_size: int = 128
    context_length: int = 256
    rms_eps: float = 1e-6

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


TINY = GgufShape()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-printable-character map (what byte-level BPE vocabularies spell)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def ascii_bpe(vocab_size: int) -> tuple[list[str], list[str]]:
    """(tokens by id, merges "a b") of a byte-level BPE over ASCII trained on CORPUS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    alphabet = [c for b, c in _bytes_to_unicode().items() if b < 128]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def build_gguf_model(
    path: Path,
    *,
    seed: int = 0,
    shape: GgufShape = TINY,
    chat_template: str | None = CHAT_TEMPLATE,
    quantize: str | None = None,
    never_end: bool = False,
) -> Path:
    """Write a llama-architecture GGUF with random weights (F32, or the 2-D weights quantized
    to `quantize`, e.g. "Q4_0") and return its path. `never_end`: the special tokens' output
    rows are zero, so their logit is 0 while the largest of the others is surely above it: a
    greedy generation never ends before max_tokens (benchmarks)."""
    import gguf

    tokens, merges = ascii_bpe(shape.vocab_size)
    vocab = len(tokens)
    ids = {t: i for i, t in enumerate(tokens)}
    rng = np.random.default_rng(seed)
    h, hd = shape.hidden_size, shape.head_size
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("hatswarm-tiny-gguf")
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(h)
    writer.add_block_count(shape.num_layers)
    writer.add_feed_forward_length(shape.intermediate_size)
    writer.add_head_count(shape.num_heads)
    writer.add_head_count_kv(shape.num_kv_heads)
    writer.add_rope_dimension_count(hd)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    special = set(SPECIAL_TOKENS)
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids[EOS])
    writer.add_eos_token_id(ids[IM_END] if chat_template else ids[EOS])
    writer.add_add_bos_token(False)
    if chat_template:
        writer.add_chat_template(chat_template)
    qtype = getattr(gguf.GGMLQuantizationType, quantize) if quantize else None

    def tensor(name: str, array: np.ndarray[Any, Any]) -> None:
        array = array.astype(np.float32)
        if qtype is not None and array.ndim == 2:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)

    def linear(fan_out: int, fan_in: int, scale: float = 1.0) -> np.ndarray[Any, Any]:
        return rng.standard_normal((fan_out, fan_in)) * (scale / np.sqrt(fan_in))

    tensor("token_embd.weight", rng.standard_normal((vocab, h)))
    for layer in range(shape.num_layers):
        blk = f"blk.{layer}"
        tensor(f"{blk}.attn_norm.weight", np.ones(h))
        tensor(f"{blk}.attn_q.weight", linear(shape.num_heads * hd, h))
        tensor(f"{blk}.attn_k.weight", linear(shape.num_kv_heads * hd, h))
        tensor(f"{blk}.attn_v.weight", linear(shape.num_kv_heads * hd, h))
        tensor(f"{blk}.attn_output.weight", linear(h, shape.num_heads * hd))
        tensor(f"{blk}.ffn_norm.weight", np.ones(h))
        tensor(f"{blk}.ffn_gate.weight", linear(shape.intermediate_size, h))
        tensor(f"{blk}.ffn_up.weight", linear(shape.intermediate_size, h))
        tensor(f"{blk}.ffn_down.weight", linear(h, shape.intermediate_size))
    tensor("output_norm.weight", np.ones(h))
    output = linear(vocab, h, scale=4.0)  # peaky logits: decisive greedy picks
    if never_end:
        output[[ids[t] for t in SPECIAL_TOKENS]] = 0.0
    tensor("output.weight", output)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _llama(path: Path, context: int) -> Any:
    from llama_cpp import Llama

    return Llama(
        model_path=str(path), n_ctx=context, chat_format="chat_template.default", verbose=False
    )


def reference_chat(
    path: Path, prompt: str, max_tokens: int, context: int = 256
) -> tuple[str, int, int]:
    """llama-cpp-python's own greedy chat completion: (text, prompt tokens, completion tokens)."""
    llm = _llama(path, context)
    try:
        answer = llm.create_chat_completion(
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0.0,
            seed=1,
        )
    finally:
        llm.close()
    usage = answer["usage"]
    return (
        answer["choices"][0]["message"]["content"] or "",
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


def reference_text(
    path: Path, prompt: str, max_tokens: int, context: int = 256
) -> tuple[str, int, int]:
    """llama-cpp-python's own greedy completion: (text, prompt tokens, completion tokens)."""
    llm = _llama(path, context)
    try:
        answer = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, seed=1)
    finally:
        llm.close()
    usage = answer["usage"]
    return answer["choices"][0]["text"], usage["prompt_tokens"], usage["completion_tokens"]
