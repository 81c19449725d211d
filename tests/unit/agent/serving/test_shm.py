"""Shared memory regions (serving/shm.py) and the decode/encode paths that use them, no sockets.

Regions are real mappings of real files (a temporary folder stands in for /dev/shm: mmap does
not care), requests are real protobufs; what must hold is that an input is decoded without a
copy, that outputs land in the region, and that every boundary refuses with a clear reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import numpy as np
import pytest
from hatswarm_agent.backends.base import TensorSpec
from hatswarm_agent.protocol.auth import PEER_KEY
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.serving import shm
from hatswarm_agent.serving.errors import AgentError, InvalidInputError
from hatswarm_agent.serving.tensors import decode_request, encode_response

A, B = "owner-a", "owner-b"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path


def make_object(root: Path, key: str, size: int) -> Path:
    path = root / key.lstrip("/")
    with path.open("wb") as f:
        f.truncate(size)
    return path


def test_register_status_unregister(root: Path) -> None:
    make_object(root, "/frames", 8192)
    regions = shm.SharedMemoryRegions(root)
    region = regions.register(A, "in", "/frames", 4096, 1000)
    assert (region.offset, region.byte_size, len(region.view)) == (4096, 1000, 1000)
    regions.register(A, "out", "frames", 0, 64)  # the leading '/' is optional
    assert [r.name for r in regions.status(A)] == ["in", "out"]
    assert [r.name for r in regions.status(A, "out")] == ["out"]
    regions.unregister(A, "in")
    regions.unregister(A, "never-registered")  # no error, as in Triton
    assert [r.name for r in regions.status(A)] == ["out"]
    regions.unregister(A)
    assert regions.status(A) == []
    assert regions.count() == 0


def test_offsets_that_are_not_page_aligned_map_the_right_bytes(root: Path) -> None:
    path = make_object(root, "/data", 10_000)
    payload = bytes(range(256)) * 4
    with path.open("r+b") as f:
        f.seek(5000)
        f.write(payload)
    region = shm.SharedMemoryRegions(root).register(A, "r", "/data", 5000, len(payload))
    assert bytes(region.view) == payload


@pytest.mark.parametrize(
    ("key", "offset", "size", "message"),
    [
        ("/../etc/passwd", 0, 8, "not a POSIX shm name"),
        ("/a/b", 0, 8, "not a POSIX shm name"),
        ("/..", 0, 8, "not a POSIX shm name"),
        ("/missing", 0, 8, "no shared memory object '/missing'"),
        ("/small", 0, 0, "byte_size must be > 0"),
        ("/small", 60, 8, "do not fit shared memory object '/small' \\(64 bytes\\)"),
    ],
)
def test_register_refuses_bad_keys_and_sizes(
    root: Path, key: str, offset: int, size: int, message: str
) -> None:
    make_object(root, "/small", 64)
    with pytest.raises(InvalidInputError, match=message):
        shm.SharedMemoryRegions(root).register(A, "r", key, offset, size)


def test_register_refuses_symlinks_and_duplicates(root: Path) -> None:
    target = make_object(root, "/real", 64)
    (root / "link").symlink_to(target)
    regions = shm.SharedMemoryRegions(root)
    with pytest.raises(InvalidInputError, match="cannot open shared memory object '/link'"):
        regions.register(A, "r", "/link", 0, 8)
    regions.register(A, "r", "/real", 0, 8)
    with pytest.raises(shm.RegionExistsError) as info:
        regions.register(A, "r", "/real", 0, 8)
    assert info.value.code is grpc.StatusCode.ALREADY_EXISTS


def test_regions_belong_to_their_client(root: Path) -> None:
    make_object(root, "/x", 64)
    regions = shm.SharedMemoryRegions(root)
    regions.register(A, "mine", "/x", 0, 64)
    with pytest.raises(shm.RegionNotFoundError, match="'mine' is not registered"):
        regions.get(B, "mine")
    assert regions.status(B) == []
    regions.unregister(B)  # B's "all" is none of A's
    regions.unregister(B, "mine")
    assert [r.name for r in regions.status(A)] == ["mine"]
    regions.register(B, "mine", "/x", 0, 64)  # the same name is B's own
    assert regions.count() == 2


def test_limits_per_client_and_in_clients(root: Path) -> None:
    make_object(root, "/x", 4096)
    regions = shm.SharedMemoryRegions(root, max_regions=2, max_bytes=1000, max_clients=2)
    regions.register(A, "1", "/x", 0, 400)
    regions.register(A, "2", "/x", 0, 400)
    with pytest.raises(shm.RegionLimitError, match="2 regions at most"):
        regions.register(A, "3", "/x", 0, 10)
    regions.unregister(A, "2")
    with pytest.raises(shm.RegionLimitError, match="at most 1000"):
        regions.register(A, "3", "/x", 0, 700)
    regions.register(B, "1", "/x", 0, 10)
    with pytest.raises(shm.RegionLimitError, match="2 clients already") as info:
        regions.register("owner-c", "1", "/x", 0, 10)
    assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_shrunk_object_is_refused_instead_of_faulting(root: Path) -> None:
    path = make_object(root, "/x", 8192)
    region = shm.SharedMemoryRegions(root).register(A, "r", "/x", 4096, 4096)
    assert len(region.checked(0, 4096, "input 'x'")) == 4096
    with pytest.raises(InvalidInputError, match="do not fit shared memory region 'r'"):
        region.checked(100, 4000, "input 'x'")
    os.truncate(path, 4096)
    with pytest.raises(InvalidInputError, match="shrank below the region"):
        region.checked(0, 16, "input 'x'")


def test_only_callers_on_this_host_are_local() -> None:
    assert shm.is_local("unix:/run/hatswarm.sock")
    assert shm.is_local("unix:")
    assert shm.is_local("ipv4:127.0.0.1:5000")
    assert shm.is_local("ipv6:[::1]:5000")
    assert not shm.is_local("ipv4:192.0.2.2:5000")
    assert not shm.is_local("ipv6:[fd00::2]:5000")


class Context:
    def __init__(self, token: str = "", hop: str = "") -> None:
        self.token, self.hop = token, hop

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        bearer = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        return (*bearer, (PEER_KEY, self.hop)) if self.hop else bearer


def test_owner_is_a_digest_of_the_bearer_token() -> None:
    assert shm.owner_of(Context()) == ""
    one, two = shm.owner_of(Context("t1")), shm.owner_of(Context("t2"))
    assert one != two
    assert "t1" not in one  # the token itself is not kept


def test_a_hop_admitted_by_its_peer_credential_is_its_own_client() -> None:
    """A pool-internal hop carries no bearer token: it must not share the anonymous client's
    regions (nor a client's whose token happens to equal the credential)."""
    hop = shm.owner_of(Context(hop="c1"))
    assert hop not in ("", shm.owner_of(Context("c1")))
    assert shm.owner_of(Context("t1", hop="c1")) == shm.owner_of(Context("t1"))


def shm_input(
    request: pb.ModelInferRequest, name: str, datatype: str, shape: list[int], region: str,
    size: int, offset: int | None = None,
) -> None:  # fmt: skip
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
    tensor.parameters[shm.REGION_PARAM].string_param = region
    tensor.parameters[shm.SIZE_PARAM].int64_param = size
    if offset is not None:
        tensor.parameters[shm.OFFSET_PARAM].int64_param = offset


def test_inputs_decode_from_the_mapping_without_a_copy(root: Path) -> None:
    path = make_object(root, "/in", 4096)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with path.open("r+b") as f:
        f.seek(64)
        f.write(x.tobytes())
    regions = shm.SharedMemoryRegions(root)
    region = regions.register(A, "in", "/in", 0, 4096)
    request = pb.ModelInferRequest(model_name="m")
    shm_input(request, "x", "FP32", [3, 4], "in", x.nbytes, offset=64)
    plain = request.inputs.add(name="b", datatype="INT64", shape=[2])
    assert plain.name == "b"
    request.raw_input_contents.append(np.array([7, 8], np.int64).tobytes())
    assert shm.uses_shared_memory(request)
    shared = shm.resolve(regions, A, request)
    assert set(shared.inputs) == {0}
    specs = [TensorSpec("x", "FP32", (-1, 4)), TensorSpec("b", "INT64", (2,))]
    decoded = decode_request(request, specs, batchable=False, buffers=shared.inputs)
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    np.testing.assert_array_equal(decoded.inputs["b"], [7, 8])
    mapped = np.frombuffer(region.view, dtype=np.uint8)
    assert np.shares_memory(decoded.inputs["x"], mapped)  # zero copy: the client's pages
    with pytest.raises(shm.RegionNotFoundError):
        shm.resolve(regions, B, request)  # another client's request names nothing it has


def test_raw_entries_must_cover_exactly_the_inputs_not_in_shared_memory(root: Path) -> None:
    make_object(root, "/in", 64)
    regions = shm.SharedMemoryRegions(root)
    regions.register(A, "in", "/in", 0, 64)
    request = pb.ModelInferRequest(model_name="m")
    shm_input(request, "x", "FP32", [4], "in", 16)
    request.inputs.add(name="b", datatype="FP32", shape=[4])  # no data for it anywhere
    shared = shm.resolve(regions, A, request)
    specs = [TensorSpec("x", "FP32", (4,)), TensorSpec("b", "FP32", (4,))]
    with pytest.raises(InvalidInputError, match="0 entries for the 1 inputs not in shared"):
        decode_request(request, specs, batchable=False, buffers=shared.inputs)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.parameters[shm.SIZE_PARAM].ClearField("int64_param"), "must be an integer"),
        (lambda t: t.parameters.__delitem__(shm.SIZE_PARAM), "needs 'shared_memory_byte_size'"),
        (lambda t: setattr(t.parameters[shm.REGION_PARAM], "int64_param", 3), "must be a string"),
        (lambda t: t.contents.fp32_contents.append(1.0), "both shared memory and contents"),
        (lambda t: setattr(t.parameters[shm.SIZE_PARAM], "int64_param", 65), "do not fit"),
    ],
)
def test_malformed_shared_memory_parameters_are_refused(
    root: Path, mutate: object, message: str
) -> None:
    make_object(root, "/in", 64)
    regions = shm.SharedMemoryRegions(root)
    regions.register(A, "in", "/in", 0, 64)
    request = pb.ModelInferRequest(model_name="m")
    shm_input(request, "x", "FP32", [4], "in", 16)
    mutate(request.inputs[0])  # type: ignore[operator]
    with pytest.raises(InvalidInputError, match=message):
        shm.resolve(regions, A, request)


def test_outputs_are_written_into_their_region(root: Path) -> None:
    make_object(root, "/out", 4096)
    regions = shm.SharedMemoryRegions(root)
    region = regions.register(A, "out", "/out", 0, 4096)
    request = pb.ModelInferRequest(model_name="m")
    wanted = request.outputs.add(name="y")
    wanted.parameters[shm.REGION_PARAM].string_param = "out"
    wanted.parameters[shm.SIZE_PARAM].int64_param = 40
    wanted.parameters[shm.OFFSET_PARAM].int64_param = 8
    request.outputs.add(name="z")  # in the message, raw
    shared = shm.resolve(regions, A, request)
    y = np.linspace(0, 1, 10, dtype=np.float32)
    z = np.array([1, 2], np.int64)
    specs = [TensorSpec("y", "FP32", (10,)), TensorSpec("z", "INT64", (2,))]
    response = encode_response(request, "1", {"y": y, "z": z}, specs, False, shared.outputs)
    assert list(response.raw_output_contents) == [b"", z.tobytes()]  # lined up, y not sent
    assert list(response.outputs[0].shape) == [10]
    np.testing.assert_array_equal(np.frombuffer(region.view[8:48], np.float32), y)
    small = {"y": region.view[:20]}
    with pytest.raises(InvalidInputError, match=r"20 bytes of shared memory given.*needs 40"):
        encode_response(request, "1", {"y": y, "z": z}, specs, False, small)


async def test_rpcs_refuse_remote_callers_and_report_per_client(root: Path) -> None:
    make_object(root, "/x", 64)

    class Rpcs(shm.SharedMemoryRpcs):
        pass

    class Call(Context):
        def __init__(self, token: str, peer: str) -> None:
            super().__init__(token)
            self._peer = peer
            self.aborted: tuple[grpc.StatusCode, str] | None = None

        def peer(self) -> str:
            return self._peer

        async def abort(self, code: grpc.StatusCode, message: str) -> None:
            self.aborted = (code, message)
            raise AgentError(message)

    rpcs = Rpcs()
    rpcs.shm_regions = shm.SharedMemoryRegions(root)
    register = pb.SystemSharedMemoryRegisterRequest(name="r", key="/x", byte_size=64)
    remote = Call("t", "ipv4:192.0.2.7:4000")
    with pytest.raises(AgentError):
        await rpcs.SystemSharedMemoryRegister(register, remote)
    assert remote.aborted is not None
    assert remote.aborted[0] is grpc.StatusCode.PERMISSION_DENIED
    await rpcs.SystemSharedMemoryRegister(register, Call("t", "unix:"))
    mine = await rpcs.SystemSharedMemoryStatus(
        pb.SystemSharedMemoryStatusRequest(), Call("t", "unix:")
    )
    assert mine.regions["r"].byte_size == 64
    theirs = await rpcs.SystemSharedMemoryStatus(
        pb.SystemSharedMemoryStatusRequest(), Call("other", "unix:")
    )
    assert not theirs.regions
    await rpcs.SystemSharedMemoryUnregister(
        pb.SystemSharedMemoryUnregisterRequest(), Call("t", "unix:")
    )
    assert rpcs.shm_regions.count() == 0
