"""Text embeddings from an ONNX encoder on the CPU ("embed"): tokenize, encode, pool.

A model is a folder (or a tarball of one) with the encoder (`model.onnx`, option `filename`)
and a Hugging Face `tokenizer.json`, read with the `tokenizers` package (the agent's `embed`
extra). The encoder takes `input_ids` and `attention_mask` (and `token_type_ids` when it asks
for them, as zeros) and returns either per-token states `[batch, seq, dim]`, mean-pooled over
the attention mask (option `pooling=cls` takes the first token instead), or already pooled
vectors `[batch, dim]`. Vectors are L2-normalised unless `normalize=false` — what
sentence-transformers models such as all-MiniLM-L6-v2 do, and what OpenAI's embeddings are.

It is an OIP model too: `text` (BYTES [-1]) in, `embedding` (FP32 [-1, dim]) and
`prompt_tokens` (INT64 [1], the tokens the texts took: what an OpenAI answer's usage reports)
out. That face, and `embed` on the model's worker thread, are `TextEmbeddingModel`'s, which
llama.cpp's embedding mode (llamacpp.py) shares; each model tokenizes and encodes its own way.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from hatswarm_agent.backends.base import (
    Array,
    BackendError,
    BackendUnavailableError,
    LoadedModel,
    TensorSpec,
)
from hatswarm_agent.backends.generation import (
    EMBED,
    CpuModelBackend,
    Embeddings,
    GenerationRequestError,
    ModelFolder,
    load_from_folder,
    read_json,
)
from hatswarm_agent.backends.options import bool_option, int_option

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the tokenizers package is not installed: install the agent with its `embed` extra "
    "(pip install 'hatswarm-agent[embed]')"
)
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_TOKENS = 512
DEFAULT_BATCH = 32
TEXT = TensorSpec("text", "BYTES", (-1,))
PROMPT_TOKENS = TensorSpec("prompt_tokens", "INT64", (1,))


def mean_pool(
    states: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Mean of the token states the attention mask keeps: [batch, seq, dim] -> [batch, dim]."""
    weights = mask[..., None].astype(np.float32)
    summed = (states * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    pooled: npt.NDArray[np.float32] = (summed / counts).astype(np.float32)
    return pooled


def l2_normalize(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


class TextEmbeddingModel(LoadedModel):
    """An embedding model with one worker thread (`_executor`, the subclass's): `embed` runs
    `embed_blocking` there, `run` is the OIP path. A subclass implements `embed_blocking`
    and `close`."""

    capabilities = frozenset({EMBED})
    max_batch_size = 0
    dimensions: int
    _executor: Executor
    _closed: bool

    def _texts(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> list[str]:
        """The inputs that are texts, once the model is known to be open and `inputs` not
        empty (what to do with lists of token ids is the model's to say)."""
        if self._closed:
            raise BackendError("model is unloaded")
        if not inputs:
            raise GenerationRequestError("input must hold at least one text")
        return [x for x in inputs if isinstance(x, str)]

    @abc.abstractmethod
    def embed_blocking(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> Embeddings:
        """One vector per input and the tokens they took. Blocking."""

    async def embed(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> Embeddings:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.embed_blocking, inputs)

    def run(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        if TEXT.name not in inputs:
            raise GenerationRequestError(f"input {TEXT.name} (BYTES) is required")
        texts = [
            v.decode("utf-8") if isinstance(v, bytes) else str(v)
            for v in np.asarray(inputs[TEXT.name], dtype=object).reshape(-1)
        ]
        result = self.embed_blocking(texts)
        tokens = np.array([result.prompt_tokens], dtype=np.int64)
        return {"embedding": result.vectors, PROMPT_TOKENS.name: tokens}

    def capacity_fps(self) -> float:
        return 0.0


class EncoderModel(TextEmbeddingModel):
    """One encoder and its tokenizer."""

    def __init__(self, folder: ModelFolder, options: Mapping[str, str]) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise BackendUnavailableError(INSTALL_HINT) from exc
        self._folder = folder
        filename = options.get("filename", "model.onnx")
        model_path = folder.path / filename
        if not model_path.is_file():
            raise BackendError(f"the model folder has no {filename}")
        config_path = folder.path / "tokenizer_config.json"
        config = read_json(config_path) if config_path.is_file() else {}
        limit = config.get("model_max_length")
        default_max = (
            limit if isinstance(limit, int) and 0 < limit < 1 << 20 else DEFAULT_MAX_TOKENS
        )
        self.max_tokens = int_option(options, "max_tokens", default_max, minimum=1)
        self._batch = int_option(options, "batch_size", DEFAULT_BATCH, minimum=1)
        self.pooling = options.get("pooling", "mean")
        if self.pooling not in ("mean", "cls"):
            raise BackendError(f"option pooling must be mean or cls, got {self.pooling!r}")
        self.normalize = bool_option(options, "normalize", True)
        try:
            self._tokenizer: Any = Tokenizer.from_file(str(folder.path / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise BackendError(f"cannot read {TOKENIZER_FILE}: {exc}") from exc
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_tokens)
        so = ort.SessionOptions()
        so.intra_op_num_threads = int_option(options, "intra_op_threads", 1, minimum=0)
        try:
            self._session = ort.InferenceSession(
                str(model_path), so, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's errors share no public base class
            raise BackendError(f"onnxruntime cannot load {filename}: {exc}") from exc
        names = {i.name for i in self._session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= names:
            raise BackendError(f"the encoder must take input_ids and attention_mask, has {names}")
        self._token_types = "token_type_ids" in names
        output = self._session.get_outputs()[0]
        self._output = output.name
        dim = output.shape[-1]
        if not isinstance(dim, int):
            dim = int(self._encode_ids([[1]]).shape[1])
        self.dimensions = dim
        self.inputs = [TEXT]
        self.outputs = [TensorSpec("embedding", "FP32", (-1, dim)), PROMPT_TOKENS]
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._closed = False

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(e.ids) for e in self._tokenizer.encode_batch(list(texts))]

    def _encode_ids(self, batch: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        longest = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), longest), np.int64)
        mask = np.zeros((len(batch), longest), np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if self._token_types:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (states,) = self._session.run([self._output], feeds)
        states = np.asarray(states, dtype=np.float32)
        if states.ndim == 2:
            vectors = states
        elif self.pooling == "cls":
            vectors = states[:, 0, :]
        else:
            vectors = mean_pool(states, mask)
        return l2_normalize(vectors) if self.normalize else vectors

    def embed_blocking(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> Embeddings:
        texts = self._texts(inputs)
        if len(texts) == len(inputs):
            ids = self.tokenize(texts)
        elif not texts:
            ids = [[int(t) for t in x][: self.max_tokens] for x in inputs if not isinstance(x, str)]
        else:
            raise GenerationRequestError("input must be texts or lists of token ids, not a mix")
        if any(not row for row in ids):
            raise GenerationRequestError("an input is empty")
        parts = [
            self._encode_ids(ids[i : i + self._batch]) for i in range(0, len(ids), self._batch)
        ]
        return Embeddings(np.concatenate(parts), sum(len(row) for row in ids))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self._folder.cleanup()


class EmbeddingBackend(CpuModelBackend[EncoderModel]):
    """Loads ONNX encoders with their tokenizers on the CPU."""

    name = "embedding"

    def load(self, path: Path, options: Mapping[str, str]) -> EncoderModel:
        """Options: filename, max_tokens, batch_size, pooling (mean, cls), normalize,
        intra_op_threads."""
        return self._track(
            load_from_folder(path, TOKENIZER_FILE, lambda f: EncoderModel(f, options))
        )
