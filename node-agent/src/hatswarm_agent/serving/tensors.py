"""Open Inference Protocol tensors <-> numpy, validated against a model's metadata. Pure.

Every check a backend would otherwise fail on (name, datatype, rank, fixed dims, byte count,
element count) happens here first, so a bad request is INVALID_ARGUMENT naming the input and
what was expected, never an onnxruntime error turned INTERNAL. Raw contents are decoded with
`np.frombuffer` (zero copy); nothing loops over elements except BYTES.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hatswarm_agent.backends.base import Array, TensorSpec
from hatswarm_agent.protocol.datatypes import CONTENTS_FIELD, OIP_TO_NUMPY
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.serving.errors import InvalidInputError

NUMPY_TO_OIP: dict[np.dtype[Any], str] = {
    dt: name for name, dt in OIP_TO_NUMPY.items() if name not in ("BF16", "BYTES")
}

# The wide dtype a typed field decodes to before range-checking into the narrow one.
_FIELD_DTYPE: dict[str, np.dtype[Any]] = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}


# What one decoded BYTES element costs beyond its payload: the bytes object's header and its
# slot in the list and in the object array (CPython, 64-bit).
BYTES_ITEM_OVERHEAD = 33 + 8 + 8
# Requests at least this big are decoded (and their answers encoded) off the event loop.
LARGE_REQUEST_BYTES = 1 << 20
LARGE_REQUEST_ITEMS = 1 << 16


@dataclass(frozen=True, slots=True)
class TensorLimits:
    """What one request may make this node allocate, checked before anything is decoded.

    A request past a limit is INVALID_ARGUMENT naming the limit (and the flag that sets it),
    never a node that stalls or runs out of memory: one 32 MB request of 8M empty strings
    would otherwise decode to ~0.5 GB of Python objects.
    """

    max_bytes_elements: int = 1 << 18  # BYTES elements per request, all inputs together
    max_decoded_bytes: int = 256 << 20  # estimated memory of the decoded inputs

    def check_count(self, name: str, count: int, seen: int) -> None:
        """`count` BYTES elements for input `name`, `seen` before it (from the shape alone)."""
        if seen + count > self.max_bytes_elements:
            raise InvalidInputError(
                f"input '{name}': {seen + count} BYTES elements in the request exceed this "
                f"node's limit of {self.max_bytes_elements} (--max-bytes-elements)"
            )

    def check_decoded(self, name: str, size: int) -> None:
        if size > self.max_decoded_bytes:
            raise InvalidInputError(
                f"input '{name}' would decode to about {size} bytes, over this node's limit of "
                f"{self.max_decoded_bytes} (--max-decoded-bytes)"
            )


DEFAULT_LIMITS = TensorLimits()


def is_large(request: pb.ModelInferRequest) -> bool:
    """Whether decoding `request` takes long enough to leave the event loop.

    Asked of the declared shapes alone: touching raw_input_contents copies each tensor.
    A request whose data disagrees with its shape fails the decode's own checks.
    """
    size = 0
    for t in request.inputs:
        count = math.prod(t.shape) if t.shape else 1
        if t.datatype == "BYTES" and count >= LARGE_REQUEST_ITEMS:
            return True
        dtype = OIP_TO_NUMPY.get(t.datatype)
        size += count * (dtype.itemsize if dtype is not None else 4)
    return size >= LARGE_REQUEST_BYTES


def check_wire_limits(data: bytes, limits: TensorLimits) -> None:
    """`limits` on a serialized ModelInferRequest, before it is parsed.

    Only the inputs' names, datatypes and shapes are read (a scan of the protobuf wire
    format); every tensor's data is skipped unread. An 8M-element BYTES request is refused
    here without a single copy of its 32 MB, so the event loop stays free.
    """
    strings = 0
    for number, _, value in _wire_fields(memoryview(data)):
        if number != 5 or not isinstance(value, memoryview):  # ModelInferRequest.inputs
            continue
        name, datatype, shape = "", "", []
        for n, _, v in _wire_fields(value):  # InferInputTensor: name 1, datatype 2, shape 3
            if n == 1 and isinstance(v, memoryview):
                name = bytes(v[:200]).decode(errors="replace")
            elif n == 2 and isinstance(v, memoryview):
                datatype = bytes(v).decode(errors="replace")
            elif n == 3:
                shape.extend(_int64s(v))
        if datatype == "BYTES" and shape and min(shape) >= 0:
            count = math.prod(shape)
            limits.check_count(name, count, strings)
            strings += count


def _wire_fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one protobuf message: ints for varints and fixed
    fields, views (no copy) for length-delimited ones."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise InvalidInputError("the request is not a valid ModelInferRequest (truncated)")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise InvalidInputError("the request is not a valid ModelInferRequest (truncated)")
            yield number, wire, int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        else:
            raise InvalidInputError(f"the request is not a valid ModelInferRequest (wire {wire})")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise InvalidInputError("the request is not a valid ModelInferRequest (varint)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _int64s(value: int | memoryview) -> list[int]:
    """A repeated int64's values: one varint, or a packed run of them."""
    raw: list[int] = []
    if isinstance(value, int):
        raw.append(value)
    else:
        pos = 0
        while pos < len(value):
            v, pos = _varint(value, pos)
            raw.append(v)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in raw]


@dataclass(slots=True)
class DecodedRequest:
    """Validated inputs ready for a backend, plus what the batcher needs to merge requests."""

    inputs: dict[str, Array]
    batch: int  # items along dim 0 when the model batches, else 1
    key: tuple[tuple[int, ...], ...]  # per-input shapes past dim 0: only equal keys can merge
    raw: bool  # the request used raw_input_contents (answer in kind)


Buffer = bytes | memoryview


def decode_request(
    request: pb.ModelInferRequest,
    specs: Sequence[TensorSpec],
    batchable: bool,
    limits: TensorLimits = DEFAULT_LIMITS,
    buffers: Mapping[int, Buffer] | None = None,
) -> DecodedRequest:
    """Check `request` against the model's inputs and `limits`, and turn it into numpy arrays.

    This runs once per request (on the event loop unless the request `is_large`), so the common
    case does no more than it must: specs are found by a scan (models have a handful of
    inputs), messages are only formatted when a check fails. `buffers` holds the inputs that
    came another way (shared memory, by input index); the other inputs are then in
    raw_input_contents, in order.
    """
    tensors = request.inputs
    contents: Sequence[Buffer] = request.raw_input_contents
    if buffers:
        contents = _with_buffers(len(tensors), contents, buffers)
    n_raw = len(contents)
    raw = n_raw > 0
    if raw and n_raw != len(tensors):
        raise InvalidInputError(f"raw_input_contents has {n_raw} entries for {len(tensors)} inputs")
    arrays: dict[str, Array] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    strings = decoded = 0  # BYTES elements and estimated decoded bytes so far
    for i, tensor in enumerate(tensors):
        name = tensor.name
        spec = _spec_named(specs, name)
        if name in arrays:
            raise InvalidInputError(f"input '{name}' given twice")
        if tensor.datatype != spec.datatype:
            raise InvalidInputError(
                f"input '{name}': datatype {tensor.datatype or '(empty)'}, expected {spec.datatype}"
            )
        shape = tuple(tensor.shape)
        check_shape(spec, shape)
        if raw and tensor.HasField("contents"):
            raise InvalidInputError(
                f"input '{name}': both raw_input_contents and typed contents given"
            )
        count = math.prod(shape)
        if spec.datatype == "BYTES":  # refused by its shape before its data is touched
            limits.check_count(name, count, strings)
        data = contents[i] if raw else b""  # each access copies the tensor: once
        if spec.datatype == "BYTES":
            payload = _bytes_payload(spec, count, data if raw else None, tensor.contents)
            strings += count
            decoded += count * BYTES_ITEM_OVERHEAD + payload
        elif not raw:  # typed numbers decode to a fresh array (raw ones are zero-copy views)
            decoded += count * 8
        limits.check_decoded(name, decoded)
        if raw:
            arrays[name] = decode_raw(spec, shape, data)
        else:
            arrays[name] = decode_typed(spec, shape, tensor.contents)
        shapes[name] = shape
    if len(arrays) != len(specs):  # every given name is a distinct spec: some are left out
        missing = [s.name for s in specs if s.name not in arrays and not s.optional]
        if missing:
            names = sorted(s.name for s in specs)
            raise InvalidInputError(f"missing inputs {missing}: model inputs are {names}")
    if not batchable:
        return DecodedRequest(arrays, 1, (), raw)
    key = tuple(shapes[s.name][1:] if s.name in shapes else (-1,) for s in specs)
    if len(shapes) == 1:
        batch = next(iter(shapes.values()))[0]
    else:
        dims0 = {shape[0] for shape in shapes.values()}
        if len(dims0) != 1:
            raise InvalidInputError(
                f"inputs disagree on the batch dimension: {sorted(dims0)} "
                "(every input's first dimension is the batch)"
            )
        batch = dims0.pop()
    if batch < 1:
        raise InvalidInputError("the batch dimension (first of every input) must be >= 1")
    return DecodedRequest(arrays, batch, key, raw)


def _bytes_payload(
    spec: TensorSpec, count: int, raw: Buffer | None, contents: pb.InferTensorContents
) -> int:
    """The payload bytes of a BYTES input, found without decoding it (the limits' input)."""
    if raw is None:
        return sum(len(b) for b in contents.bytes_contents) if count else 0
    if 4 * count > len(raw):  # each element has a 4-byte length: cannot be there
        raise InvalidInputError(
            f"input '{spec.name}': BYTES raw data truncated ({len(raw)} bytes cannot hold "
            f"{count} elements)"
        )
    return len(raw) - 4 * count


def _with_buffers(count: int, raw: Sequence[Buffer], buffers: Mapping[int, Buffer]) -> list[Buffer]:
    """One entry per input: the given buffer, else the next raw_input_contents entry."""
    others = count - len(buffers)
    if len(raw) != others:
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for the {others} inputs not in shared "
            "memory (send those raw)"
        )
    it = iter(raw)
    return [buffers[i] if i in buffers else next(it) for i in range(count)]


def _spec_named(specs: Sequence[TensorSpec], name: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    names = sorted(s.name for s in specs)
    raise InvalidInputError(f"unexpected input '{name}': model inputs are {names}")


def check_shape(spec: TensorSpec, shape: tuple[int, ...]) -> None:
    """Rank and every fixed dimension must match; -1 in the spec accepts any size >= 0."""
    dims = spec.shape
    if len(shape) == len(dims):
        for d, e in zip(shape, dims, strict=True):
            if d < 0 or (e >= 0 and d != e):
                break
        else:
            return
    expected = "[" + ", ".join(str(d) for d in dims) + "]"
    negative = [i for i, d in enumerate(shape) if d < 0]
    if negative:  # -1 means "any size" in metadata only: a request's sizes are real
        raise InvalidInputError(
            f"input '{spec.name}': shape {list(shape)} has a negative dimension (index "
            f"{negative[0]}); a request gives actual sizes >= 0 (the model accepts {expected}, "
            "where -1 means any size)"
        )
    raise InvalidInputError(f"input '{spec.name}': shape {list(shape)}, expected {expected}")


def decode_raw(spec: TensorSpec, shape: tuple[int, ...], data: Buffer) -> Array:
    """Row-major raw bytes to an array; the byte count must match the shape exactly."""
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        return _decode_bytes(spec, shape, count, data)
    dtype = OIP_TO_NUMPY[spec.datatype]
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise InvalidInputError(
            f"input '{spec.name}': {len(data)} raw bytes, expected {expected} "
            f"({spec.datatype} x {list(shape)})"
        )
    arr: Array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return arr


def _decode_bytes(spec: TensorSpec, shape: tuple[int, ...], count: int, data: Buffer) -> Array:
    """BYTES raw layout: each element is a 4-byte little-endian length, then its bytes."""
    items: list[bytes] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(data):
            raise InvalidInputError(f"input '{spec.name}': BYTES raw data truncated")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidInputError(f"input '{spec.name}': BYTES raw data truncated")
        items.append(bytes(data[offset : offset + length]))
        offset += length
    if offset != len(data):
        raise InvalidInputError(
            f"input '{spec.name}': {len(data) - offset} trailing raw bytes after {count} elements"
        )
    arr = np.empty(count, dtype=np.object_)
    arr[:] = items
    return arr.reshape(shape)


def decode_typed(
    spec: TensorSpec, shape: tuple[int, ...], contents: pb.InferTensorContents
) -> Array:
    """Typed contents to an array, range-checked into the declared datatype."""
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidInputError(
            f"input '{spec.name}': {spec.datatype} must be sent in raw_input_contents"
        )
    for other in _FIELD_DTYPE.keys() | {"bytes_contents"}:
        if other != field and len(getattr(contents, other)):
            raise InvalidInputError(
                f"input '{spec.name}': {spec.datatype} data belongs in contents.{field}, "
                f"got contents.{other}"
            )
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInputError(
            f"input '{spec.name}': {len(values)} elements in contents.{field}, expected {count} "
            f"(shape {list(shape)})"
        )
    if spec.datatype == "BYTES":
        arr = np.empty(count, dtype=np.object_)
        arr[:] = list(values)
        return arr.reshape(shape)
    dtype = OIP_TO_NUMPY[spec.datatype]
    wide = np.asarray(values, dtype=_FIELD_DTYPE[field])
    if wide.dtype != dtype:
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInputError(f"input '{spec.name}': values out of range for {spec.datatype}")
        wide = wide.astype(dtype)
    out: Array = wide.reshape(shape)
    return out


def encode_bytes(arr: Array) -> bytes:
    """BYTES array to the OIP raw layout (length-prefixed elements), built in one buffer
    (a list of parts would hold two objects per element at once)."""
    out = bytearray()
    pack = struct.Struct("<I").pack
    for item in arr.reshape(-1):
        b = item.encode() if isinstance(item, str) else bytes(item)  # type: ignore[call-overload]
        out += pack(len(b))
        out += b
    return bytes(out)


def select_outputs(
    request: pb.ModelInferRequest, specs: Sequence[TensorSpec]
) -> Sequence[TensorSpec]:
    """The outputs the caller asked for (all when it named none); unknown names are invalid."""
    if not request.outputs:
        return specs
    by_name = {s.name: s for s in specs}
    chosen: list[TensorSpec] = []
    for requested in request.outputs:
        spec = by_name.get(requested.name)
        if spec is None:
            raise InvalidInputError(
                f"unknown requested output '{requested.name}': model outputs are {sorted(by_name)}"
            )
        chosen.append(spec)
    return chosen


def encode_response(
    request: pb.ModelInferRequest,
    version: str,
    outputs: Mapping[str, Array],
    specs: Sequence[TensorSpec],
    raw: bool,
    into: Mapping[str, memoryview] | None = None,
) -> pb.ModelInferResponse:
    """Build the response in the request's style (raw or typed); FP16/BF16 force raw.

    Outputs named in `into` (shared memory) are written there; their raw_output_contents entry
    stays empty, so the entries still line up with the outputs (as Triton answers).
    """
    if not raw and (into or any(CONTENTS_FIELD.get(s.datatype) is None for s in specs)):
        raw = True
    response = pb.ModelInferResponse(
        model_name=request.model_name, model_version=version, id=request.id
    )
    for spec in specs:
        arr = outputs[spec.name]
        tensor = response.outputs.add(name=spec.name, datatype=spec.datatype, shape=arr.shape)
        if into and spec.name in into:
            write_into(spec.name, arr, into[spec.name])
            response.raw_output_contents.append(b"")
        elif spec.datatype == "BYTES":
            if raw:
                response.raw_output_contents.append(encode_bytes(arr))
            else:
                tensor.contents.bytes_contents.extend(
                    x.encode() if isinstance(x, str) else bytes(x)  # type: ignore[call-overload]
                    for x in arr.reshape(-1)
                )
        elif raw:
            response.raw_output_contents.append(arr.tobytes())  # C order, contiguous or not
        else:
            getattr(tensor.contents, CONTENTS_FIELD[spec.datatype]).extend(arr.reshape(-1).tolist())
    return response


def write_into(name: str, array: Array, view: memoryview) -> None:
    """Put one output into a caller's buffer (row-major), refusing one that does not fit."""
    if array.dtype == np.object_:
        data = encode_bytes(array)
        if len(data) > len(view):
            raise InvalidInputError(_too_small(name, len(view), len(data)))
        view[: len(data)] = data
        return
    if array.nbytes > len(view):
        raise InvalidInputError(_too_small(name, len(view), array.nbytes))
    target = np.frombuffer(view, dtype=array.dtype, count=array.size).reshape(array.shape)
    np.copyto(target, array)


def _too_small(name: str, have: int, need: int) -> str:
    return f"output '{name}': {have} bytes of shared memory given, the output needs {need}"
