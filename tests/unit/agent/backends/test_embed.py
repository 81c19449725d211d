"""The embedding backend against the encoder run directly with onnxruntime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hatswarm_agent.backends import create_backend
from hatswarm_agent.backends.base import LoadedModel
from hatswarm_agent.backends.embed import EmbeddingBackend, EncoderModel
from hatswarm_agent.backends.generation import EMBED, EmbeddingModel, GenerationRequestError
from tokenizers import Tokenizer

from tests.genaimodels import EMBED_HIDDEN, build_embedding_model

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog.", "a"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_embedding_model(tmp_path_factory.mktemp("embed") / "encoder", seed=5)


@pytest.fixture
def backend() -> Iterator[EmbeddingBackend]:
    b = EmbeddingBackend()
    yield b
    b.close()


def direct(folder: Path, texts: list[str], *, normalize: bool = True) -> np.ndarray:
    """Each text alone through the encoder, mean-pooled over its tokens: no padding at all."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], np.int64)
        (states,) = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        vector = states[0].mean(axis=0)
        rows.append(vector / np.linalg.norm(vector) if normalize else vector)
    return np.stack(rows).astype(np.float32)


async def test_vectors_equal_the_encoder_run_directly(
    backend: EmbeddingBackend, folder: Path
) -> None:
    model = backend.load(folder, {})
    assert isinstance(model, EmbeddingModel)
    assert isinstance(model, LoadedModel)
    assert EMBED in model.capabilities
    assert model.dimensions == EMBED_HIDDEN
    result = await model.embed(TEXTS)
    # Batched with padding, yet equal to each text alone: the mask keeps padding out.
    np.testing.assert_allclose(result.vectors, direct(folder, TEXTS), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, rtol=1e-5)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert result.prompt_tokens == sum(len(tokenizer.encode(t).ids) for t in TEXTS)


async def test_token_id_inputs_and_unnormalized_vectors(
    backend: EmbeddingBackend, folder: Path
) -> None:
    model = backend.load(folder, {"normalize": "false"})
    ids = model.tokenize(TEXTS)
    from_ids = await model.embed(ids)
    np.testing.assert_allclose(
        from_ids.vectors, direct(folder, TEXTS, normalize=False), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(GenerationRequestError):
        await model.embed([])
    with pytest.raises(GenerationRequestError, match="mix"):
        await model.embed(["a", [1, 2]])  # type: ignore[list-item]


def test_oip_run(backend: EmbeddingBackend, folder: Path) -> None:
    model: EncoderModel = backend.load(folder, {"batch_size": "2"})
    out = model.run({"text": np.array([t.encode() for t in TEXTS], dtype=object)})
    np.testing.assert_allclose(out["embedding"], direct(folder, TEXTS), rtol=1e-5, atol=1e-6)
    assert [s.name for s in model.outputs] == ["embedding", "prompt_tokens"]
    assert out["prompt_tokens"].tolist() == [sum(len(ids) for ids in model.tokenize(TEXTS))]
    assert model.outputs[0].shape == (-1, EMBED_HIDDEN)


def test_registered_by_name() -> None:
    backend = create_backend("embed")
    assert backend.name == "embedding"
    backend.close()
