"""Response cache for deterministic models (routes with cache_ttl_seconds > 0).

Keyed by model, version and a hash of everything that decides the answer: each input's name,
datatype, shape and bytes (raw or typed contents), the requested outputs and the request
parameters except those that do not change the result (id, priority, timeout). Bounded by
entries and bytes, least recently used out first, each entry with its route's TTL. Errors are
never stored. A model's entries go when the set of versions it is served at changes (a new
table, a load of another version); a hit is answered with the request's own id.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import PRIORITY_PARAM

IGNORED_PARAMETERS = frozenset({PRIORITY_PARAM, "timeout", "id"})


def request_key(request: pb.ModelInferRequest, version: str) -> tuple[str, str, bytes]:
    """(model, version, digest of inputs + outputs + parameters)."""
    h = hashlib.blake2b(digest_size=20)
    for tensor in request.inputs:
        h.update(tensor.name.encode())
        h.update(b"\0")
        h.update(tensor.datatype.encode())
        h.update(repr(list(tensor.shape)).encode())
        if tensor.HasField("contents"):
            h.update(b"T")
            h.update(tensor.contents.SerializeToString(deterministic=True))
        if tensor.parameters:
            h.update(_params(tensor.parameters))
    for raw in request.raw_input_contents:
        h.update(b"R")
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    for out in request.outputs:
        h.update(b"O")
        h.update(out.name.encode())
        if out.parameters:
            h.update(_params(out.parameters))
    if request.parameters:
        h.update(_params(request.parameters, IGNORED_PARAMETERS))
    return request.model_name, version, h.digest()


def _params(params: object, skip: frozenset[str] = frozenset()) -> bytes:
    items = params.items()  # type: ignore[attr-defined]
    return b"".join(
        b"P" + k.encode() + b"=" + v.SerializeToString(deterministic=True) + b";"
        for k, v in sorted(items)
        if k not in skip
    )


@dataclass
class _Entry:
    payload: bytes
    expires: float


class ResponseCache:
    """LRU of serialized responses with per-entry TTL, bounded by entries and bytes."""

    def __init__(
        self,
        max_entries: int = 4096,
        max_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str, bytes], _Entry] = OrderedDict()
        self._bytes = 0
        self._versions: dict[str, frozenset[str]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: tuple[str, str, bytes], request_id: str) -> pb.ModelInferResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry.expires <= self._clock():
            self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        response = pb.ModelInferResponse.FromString(entry.payload)
        response.id = request_id
        return response

    def put(
        self, key: tuple[str, str, bytes], response: pb.ModelInferResponse, ttl_s: float
    ) -> None:
        if ttl_s <= 0:
            return
        payload = response.SerializeToString()
        size = len(payload) + len(key[2]) + 64
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = _Entry(payload, self._clock() + ttl_s)
        self._bytes += size
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[str, str, bytes]) -> None:
        entry = self._entries.pop(key)
        self._bytes -= len(entry.payload) + len(key[2]) + 64

    def invalidate(self, model: str, keep_version: str | None = None) -> int:
        """Drop a model's entries (all but `keep_version` when given); returns how many."""
        doomed = [k for k in self._entries if k[0] == model and k[1] != keep_version]
        for k in doomed:
            self._drop(k)
        return len(doomed)

    def observe_versions(self, model: str, versions: Iterable[str]) -> None:
        """Note the versions a model is served at; a change invalidates its entries."""
        current = frozenset(versions)
        before = self._versions.get(model)
        if before is not None and before != current:
            self.invalidate(model)
        self._versions[model] = current
