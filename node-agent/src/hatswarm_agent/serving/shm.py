"""Triton's system shared-memory extension: clients on this host pass tensors without copies.

A client creates a POSIX shared memory object (`shm_open`, /dev/shm), registers a region of it
(`SystemSharedMemoryRegister`: name, key, offset, byte_size), then names the region in an
input's or a requested output's parameters (`shared_memory_region`, `shared_memory_byte_size`,
`shared_memory_offset`). The agent maps the region once; an input is decoded straight from the
mapping (numpy over the mapped pages, handed to onnxruntime as is: no copy at all) and an
output is written into it (one copy, from the backend's result), its `raw_output_contents`
entry left empty as Triton does. `tritonclient.utils.shared_memory` works unchanged.

Boundaries:
- Regions belong to a client: the bearer token it registered with (its SHA-256), or for a
  pool-internal hop its peer credential, or "" for an anonymous caller (inference open). A region registered under one token is invisible to another: its
  name is simply unknown there. Each client may hold MAX_REGIONS regions of MAX_BYTES in all,
  and at most MAX_CLIENTS clients hold regions at once (a rotated token is a new client).
- Only callers on this host may register (the unix socket, or loopback TCP): a key names an
  object on this machine, so a remote client has nothing to share and must not probe ours.
- Keys are plain shm_open names (no '/' past the first character, no symlinks, regular files
  only) and a region must lie inside its object; the object's size is checked again on every
  use, because a client that shrinks it would otherwise crash the agent with SIGBUS (a shrink
  racing a running inference still can: as with Triton, shared memory trusts its clients to
  leave their objects alone while requests use them).

A request that names regions runs on this node when it holds the model (the client is here to
avoid copies; a peer could not see the memory anyway). When this node does not hold the model,
the inputs are copied into the request, it is routed like any other, and the outputs asked in
shared memory are copied out of the answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from hatswarm_agent.protocol.auth import PEER_KEY, bearer, is_loopback_peer, metadata_values
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.serving.errors import AgentError, InvalidInputError, grpc_errors

if TYPE_CHECKING:
    from hatswarm_agent.serving.dataplane import DataPlane

REGION_PARAM = "shared_memory_region"
SIZE_PARAM = "shared_memory_byte_size"
OFFSET_PARAM = "shared_memory_offset"

SHM_ROOT = Path("/dev/shm")
MAX_REGIONS = 64  # per client
MAX_BYTES = 1 << 30  # mapped per client
MAX_CLIENTS = 16
_KEY = re.compile(r"/?[A-Za-z0-9._-]{1,240}")


class RegionNotFoundError(AgentError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class RegionExistsError(AgentError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "already_exists"


class RegionLimitError(AgentError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "shm_limit"


class NotLocalError(AgentError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "not_local"


def owner_of(context: Any) -> str:
    """Whose regions a call may use: a digest of the identity the auth boundary admitted it by
    (its bearer token, else a hop's peer credential), '' for an anonymous caller."""
    metadata = context.invocation_metadata()
    token = bearer(metadata)
    if token:
        return hashlib.sha256(token.encode()).hexdigest()
    peers = metadata_values(metadata, PEER_KEY)
    if peers:
        return "peer:" + hashlib.sha256(min(peers).encode()).hexdigest()
    return ""


def is_local(peer: str) -> bool:
    """Whether a gRPC peer address is on this host (unix socket or loopback)."""
    return is_loopback_peer(peer)


@dataclass(eq=False)
class Region:
    """One registered region, mapped once; `view` covers exactly its bytes."""

    name: str
    key: str
    offset: int
    byte_size: int
    fd: int
    mapping: mmap.mmap
    view: memoryview

    def checked(self, offset: int, size: int, what: str) -> memoryview:
        """The region's bytes [offset, offset + size), after checking both the bounds and that
        the object still holds them (a shrunk object would fault instead of failing)."""
        if offset < 0 or size < 0 or offset + size > self.byte_size:
            raise InvalidInputError(
                f"{what}: {size} bytes at offset {offset} do not fit shared memory region "
                f"'{self.name}' ({self.byte_size} bytes)"
            )
        if os.fstat(self.fd).st_size < self.offset + self.byte_size:
            raise InvalidInputError(
                f"{what}: shared memory object '{self.key}' of region '{self.name}' shrank "
                "below the region; register it again"
            )
        return self.view[offset : offset + size]

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a request still reads it: unmapped once done
            self.view.release()
            self.mapping.close()
        os.close(self.fd)


@dataclass
class _Client:
    regions: dict[str, Region] = field(default_factory=dict)

    @property
    def mapped(self) -> int:
        return sum(r.byte_size for r in self.regions.values())


class SharedMemoryRegions:
    """Every client's registered regions, bounded per client and in clients."""

    def __init__(
        self,
        root: Path = SHM_ROOT,
        max_regions: int = MAX_REGIONS,
        max_bytes: int = MAX_BYTES,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.root = root
        self.max_regions = max_regions
        self.max_bytes = max_bytes
        self.max_clients = max_clients
        self._clients: dict[str, _Client] = {}

    def register(self, owner: str, name: str, key: str, offset: int, byte_size: int) -> Region:
        if not name:
            raise InvalidInputError("SystemSharedMemoryRegister needs a region name")
        if not _KEY.fullmatch(key) or key.lstrip("/") in (".", ".."):
            raise InvalidInputError(
                f"shared memory key {key!r} is not a POSIX shm name ('/name', no other '/')"
            )
        if byte_size <= 0:
            raise InvalidInputError(f"region '{name}': byte_size must be > 0")
        client = self._clients.get(owner)
        if client is not None and name in client.regions:
            raise RegionExistsError(f"shared memory region '{name}' is already registered")
        if client is None and len(self._clients) >= self.max_clients:
            raise RegionLimitError(f"{self.max_clients} clients already hold shared memory regions")
        have = client.regions if client else {}
        if len(have) >= self.max_regions:
            raise RegionLimitError(f"a client may register {self.max_regions} regions at most")
        mapped = client.mapped if client else 0
        if mapped + byte_size > self.max_bytes:
            raise RegionLimitError(
                f"region '{name}': {byte_size} bytes would take this client's shared memory to "
                f"{mapped + byte_size} bytes (at most {self.max_bytes})"
            )
        region = self._map(name, key, offset, byte_size)
        self._clients.setdefault(owner, _Client()).regions[name] = region
        return region

    def _map(self, name: str, key: str, offset: int, byte_size: int) -> Region:
        path = self.root / key.lstrip("/")
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InvalidInputError(f"no shared memory object '{key}' on this host") from None
        except OSError as exc:
            raise InvalidInputError(
                f"cannot open shared memory object '{key}': {exc.strerror}"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInputError(f"shared memory object '{key}' is not a regular object")
            if offset < 0 or offset + byte_size > st.st_size:
                raise InvalidInputError(
                    f"region '{name}': {byte_size} bytes at offset {offset} do not fit "
                    f"shared memory object '{key}' ({st.st_size} bytes)"
                )
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            mapping = mmap.mmap(fd, byte_size + offset - start, offset=start)
        except BaseException:
            os.close(fd)
            raise
        view = memoryview(mapping)[offset - start :]
        return Region(name, key, offset, byte_size, fd, mapping, view)

    def get(self, owner: str, name: str) -> Region:
        client = self._clients.get(owner)
        region = client.regions.get(name) if client else None
        if region is None:
            raise RegionNotFoundError(
                f"shared memory region '{name}' is not registered (by this client)"
            )
        return region

    def status(self, owner: str, name: str = "") -> list[Region]:
        if name:
            return [self.get(owner, name)]
        client = self._clients.get(owner)
        return list(client.regions.values()) if client else []

    def unregister(self, owner: str, name: str = "") -> None:
        """Unregister one region (unknown names are no error, as in Triton), or all of the
        client's when `name` is empty."""
        client = self._clients.get(owner)
        if client is None:
            return
        names = [name] if name else list(client.regions)
        for one in names:
            region = client.regions.pop(one, None)
            if region is not None:
                region.close()
        if not client.regions:
            del self._clients[owner]

    def count(self) -> int:
        return sum(len(c.regions) for c in self._clients.values())

    def close(self) -> None:
        for owner in list(self._clients):
            self.unregister(owner)


# --------------------------------------------------------------------------------------------
# Requests that name regions


@dataclass
class SharedTensors:
    """A request's tensors in shared memory: input index -> bytes, output name -> bytes."""

    inputs: dict[int, memoryview | bytes] = field(default_factory=dict)
    outputs: dict[str, memoryview] = field(default_factory=dict)


def _param_int(params: Any, key: str, what: str) -> int:
    param = params[key]
    kind = param.WhichOneof("parameter_choice")
    if kind == "int64_param":
        return int(param.int64_param)
    if kind == "uint64_param":
        return int(param.uint64_param)
    raise InvalidInputError(f"{what}: parameter '{key}' must be an integer")


def _region_of(
    regions: SharedMemoryRegions, owner: str, params: Any, what: str
) -> memoryview | None:
    if REGION_PARAM not in params:
        return None
    param = params[REGION_PARAM]
    if param.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInputError(f"{what}: parameter '{REGION_PARAM}' must be a string")
    if SIZE_PARAM not in params:
        raise InvalidInputError(f"{what}: '{REGION_PARAM}' needs '{SIZE_PARAM}'")
    size = _param_int(params, SIZE_PARAM, what)
    offset = _param_int(params, OFFSET_PARAM, what) if OFFSET_PARAM in params else 0
    return regions.get(owner, param.string_param).checked(offset, size, what)


def uses_shared_memory(request: pb.ModelInferRequest) -> bool:
    return any(REGION_PARAM in t.parameters for t in request.inputs) or any(
        REGION_PARAM in o.parameters for o in request.outputs
    )


def resolve(
    regions: SharedMemoryRegions, owner: str, request: pb.ModelInferRequest
) -> SharedTensors:
    """The regions a request names, checked; inputs as views of the mapping (BYTES copied:
    their elements must outlive the request)."""
    shared = SharedTensors()
    for i, tensor in enumerate(request.inputs):
        what = f"input '{tensor.name}'"
        view = _region_of(regions, owner, tensor.parameters, what)
        if view is None:
            continue
        if tensor.HasField("contents"):
            raise InvalidInputError(f"{what}: both shared memory and contents given")
        shared.inputs[i] = bytes(view) if tensor.datatype == "BYTES" else view
    for output in request.outputs:
        view = _region_of(regions, owner, output.parameters, f"output '{output.name}'")
        if view is not None:
            shared.outputs[output.name] = view
    return shared


Infer = Callable[[pb.ModelInferRequest, Any], Awaitable[pb.ModelInferResponse]]


class SharedMemoryInfer:
    """ModelInfer with shared memory in front of the agent's `infer` (the dispatcher's)."""

    def __init__(self, regions: SharedMemoryRegions, dataplane: DataPlane, infer: Infer) -> None:
        self.regions = regions
        self.dataplane = dataplane
        self.infer = infer

    async def __call__(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        if not uses_shared_memory(request):
            return await self.infer(request, context)
        shared = resolve(self.regions, owner_of(context), request)
        try:
            entry = self.dataplane.registry.get(request.model_name, request.model_version)
        except AgentError:
            return await self._routed(request, context, shared)
        return await self.dataplane.serve(
            request, entry, buffers=shared.inputs, into=shared.outputs
        )

    async def _routed(
        self, request: pb.ModelInferRequest, context: Any, shared: SharedTensors
    ) -> pb.ModelInferResponse:
        """Not held here: the inputs travel in the request, the outputs come back into memory."""
        raw = iter(request.raw_input_contents)
        contents: list[bytes] = []
        for i, tensor in enumerate(request.inputs):
            if i in shared.inputs:
                contents.append(bytes(shared.inputs[i]))
                _drop_shm_params(tensor.parameters)
            else:
                contents.append(next(raw, b""))
        del request.raw_input_contents[:]
        request.raw_input_contents.extend(contents)
        for output in request.outputs:
            _drop_shm_params(output.parameters)
        response = await self.infer(request, context)
        for index, out in enumerate(response.outputs):
            view = shared.outputs.get(out.name)
            if view is None or index >= len(response.raw_output_contents):
                continue
            data = response.raw_output_contents[index]
            if len(data) > len(view):
                raise InvalidInputError(
                    f"output '{out.name}': {len(view)} bytes of shared memory given, the "
                    f"output needs {len(data)}"
                )
            view[: len(data)] = data
            response.raw_output_contents[index] = b""
        return response


def _drop_shm_params(params: Any) -> None:
    for key in (REGION_PARAM, SIZE_PARAM, OFFSET_PARAM):
        if key in params:
            del params[key]


class SharedMemoryRpcs:
    """The three RPCs of the extension, mixed into the OIP servicer (`shm_regions` set)."""

    shm_regions: SharedMemoryRegions | None = None

    def _regions(self) -> SharedMemoryRegions:
        if self.shm_regions is None:
            raise AgentError("system shared memory is not enabled on this agent")
        return self.shm_regions

    @grpc_errors
    async def SystemSharedMemoryRegister(  # noqa: N802
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Any
    ) -> pb.SystemSharedMemoryRegisterResponse:
        regions = self._regions()
        peer = context.peer() or ""
        if not is_local(peer):
            raise NotLocalError(
                f"shared memory is for clients on this host; {peer or 'this caller'} is not"
            )
        regions.register(
            owner_of(context), request.name, request.key, request.offset, request.byte_size
        )
        return pb.SystemSharedMemoryRegisterResponse()

    @grpc_errors
    async def SystemSharedMemoryStatus(  # noqa: N802
        self, request: pb.SystemSharedMemoryStatusRequest, context: Any
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self._regions().status(owner_of(context), request.name):
            entry = response.regions[region.name]
            entry.name, entry.key = region.name, region.key
            entry.offset, entry.byte_size = region.offset, region.byte_size
        return response

    @grpc_errors
    async def SystemSharedMemoryUnregister(  # noqa: N802
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Any
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._regions().unregister(owner_of(context), request.name)
        return pb.SystemSharedMemoryUnregisterResponse()
