"""Tiny generative and embedding models for the tests: the builders live in the operator's local
mode (hatswarm_operator.local.tinyllm, which also writes the demo's model); here the runtime's
own reference loop and a model that never stops early.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from hatswarm_operator.local.tinyllm import (
    CHAT_TEMPLATE,
    CORPUS,
    EMBED_HIDDEN,
    EOS,
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    TinyDecoder,
    build_decoder_graph,
    build_embedding_model,
    build_genai_model,
    genai_config,
    write_tokenizer,
)

__all__ = [
    "CHAT_TEMPLATE",
    "CORPUS",
    "EMBED_HIDDEN",
    "EOS",
    "IM_END",
    "IM_START",
    "MEDIUM",
    "SPECIAL_TOKENS",
    "TinyDecoder",
    "build_decoder_graph",
    "build_embedding_model",
    "build_endless_model",
    "build_genai_model",
    "genai_config",
    "reference",
    "write_tokenizer",
]


# A decoder big enough that a few hundred tokens take a while (tests that act mid-generation).
MEDIUM = TinyDecoder(hidden_size=256, num_heads=4, num_kv_heads=2, num_layers=4, context_length=512)


def build_endless_model(
    folder: Path, prompt: str, tokens: int = 480, *, seed: int = 1, shape: TinyDecoder = MEDIUM
) -> Path:
    """A model (MEDIUM by default, no chat template) whose end-of-sequence token never comes in
    the first `tokens` greedy tokens after `prompt`: a generation that surely runs that long."""
    build_genai_model(folder, seed=seed, shape=shape, chat_template=None)
    seen: set[int] = set()
    while True:  # an earlier end-of-sequence token may hide a later one: until none comes
        _, generated, _ = reference(folder, prompt, tokens, do_sample=False)
        seen.update(generated)
        if len(generated) >= tokens:
            return folder
        config = json.loads((folder / "genai_config.json").read_text())
        config["model"]["eos_token_id"] = [min(set(range(shape.vocab_size)) - seen)]
        (folder / "genai_config.json").write_text(json.dumps(config))


def reference(
    folder: Path, prompt: str, max_tokens: int, *, chat: bool = False, **search: Any
) -> tuple[list[int], list[int], str]:
    """onnxruntime-genai's own Generator loop run directly on a folder: (prompt ids,
    generated ids, streamed text) — what a backend's output is compared with."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    if chat:
        prompt = tokenizer.apply_chat_template(
            json.dumps([{"role": "user", "content": prompt}]), add_generation_prompt=True
        )
    ids = [int(t) for t in tokenizer.encode(prompt)]
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + max_tokens, **search)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    stream = tokenizer.create_stream()
    tokens, text = [], ""
    while not generator.is_done():
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        tokens.append(token)
        text += stream.decode(token)
    return ids, tokens, text


def reference_pieces(
    folder: Path, prompt: str, max_tokens: int, *, chat: bool = False
) -> list[tuple[str, int]]:
    """The greedy tokens of `reference` grouped as a streamer prints them: (text, tokens) per
    piece, one whenever the decoded text becomes printable, the held tail last — what a
    stream of one response per piece carries."""
    import onnxruntime_genai as og

    _, tokens, _ = reference(folder, prompt, max_tokens, chat=chat, do_sample=False)
    stream = og.Tokenizer(og.Model(str(folder))).create_stream()
    pieces: list[tuple[str, int]] = []
    pending = 0
    for token in tokens:
        pending += 1
        text = stream.decode(token)
        if text:
            pieces.append((text, pending))
            pending = 0
    if pending:
        pieces.append(("", pending))
    return pieces
