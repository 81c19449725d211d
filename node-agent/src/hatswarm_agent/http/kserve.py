"""KServe v2 REST (the Open Inference Protocol over HTTP/JSON) for every model, so `curl` works.

    GET  /v2                                  server metadata
    GET  /v2/health/live | /v2/health/ready   200, or 503 while not ready
    GET  /v2/models/{m}[/versions/{v}]        model metadata (as ModelMetadata)
    GET  /v2/models/{m}[/versions/{v}]/ready  200, or 503 when not ready here
    POST /v2/models/{m}[/versions/{v}]/infer  JSON tensors in and out

An infer request becomes a ModelInferRequest (raw contents, so every datatype but BF16 travels)
and goes to the same `infer` as gRPC's ModelInfer: routed across the pool, cached, counted.
Output data comes back flattened in row-major order, as the protocol specifies; BYTES as UTF-8
strings. Errors are `{"error": "..."}` with the HTTP status of the error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web

from hatswarm_agent import __version__
from hatswarm_agent.backends.base import TensorSpec
from hatswarm_agent.http.common import HttpError, Services, field, json_body
from hatswarm_agent.protocol.datatypes import CONTENTS_FIELD, OIP_TO_NUMPY
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.serving.errors import AgentError
from hatswarm_agent.serving.generation import CallContext
from hatswarm_agent.serving.servicer import model_metadata
from hatswarm_agent.serving.tensors import decode_raw, encode_bytes

_INTEGER = "iu"


def error_body(error: HttpError) -> dict[str, Any]:
    return {"error": error.message}


def _array(name: str, datatype: str, shape: list[int], data: Any) -> bytes:
    """One JSON input's data as raw OIP bytes, checked against its datatype and shape."""
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).reshape(-1) if isinstance(data, list) else [data]
        items = []
        for item in flat:
            if not isinstance(item, str):
                raise HttpError(400, f"input '{name}': BYTES data must be strings")
            items.append(item.encode("utf-8"))
        if len(items) != count:
            raise HttpError(
                400, f"input '{name}': {len(items)} elements, expected {count} (shape {shape})"
            )
        array = np.empty(count, dtype=object)
        array[:] = items
        return encode_bytes(array)
    try:
        values = np.asarray(data)
    except ValueError as exc:
        raise HttpError(400, f"input '{name}': data is not a regular array: {exc}") from None
    dtype = OIP_TO_NUMPY[datatype]
    kind = values.dtype.kind
    ok = (
        (dtype.kind == "b" and kind == "b")
        or (dtype.kind in _INTEGER and kind in _INTEGER)
        or (dtype.kind == "f" and kind in "iuf")
    )
    if values.size and not ok:
        raise HttpError(400, f"input '{name}': data of {values.dtype} does not fit {datatype}")
    if values.size != count:
        raise HttpError(
            400, f"input '{name}': {values.size} elements, expected {count} (shape {shape})"
        )
    if dtype.kind in _INTEGER and values.size:
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise HttpError(400, f"input '{name}': values out of range for {datatype}")
    return np.ascontiguousarray(values.reshape(-1), dtype=dtype).tobytes()


def _set_parameter(target: Any, key: str, value: Any) -> None:
    param = target[key]
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    elif isinstance(value, str):
        param.string_param = value
    else:
        raise HttpError(400, f"parameter '{key}' must be a string, number or boolean")


def request_from_json(model: str, version: str, body: dict[str, Any]) -> pb.ModelInferRequest:
    """A KServe v2 JSON inference request as a ModelInferRequest (raw contents)."""
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.id = str(field(body, "id", str, ""))
    for key, value in (field(body, "parameters", dict, {}) or {}).items():
        _set_parameter(request.parameters, str(key), value)
    inputs = field(body, "inputs", list, [])
    if not inputs:
        raise HttpError(400, "'inputs' must be a non-empty list of tensors")
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise HttpError(400, f"inputs[{i}] must be an object")
        name = field(tensor, "name", str, "")
        datatype = field(tensor, "datatype", str, "")
        shape = field(tensor, "shape", list, None)
        if not name or not datatype or shape is None or "data" not in tensor:
            raise HttpError(400, f"inputs[{i}] needs name, shape, datatype and data")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise HttpError(400, f"input '{name}': shape must be non-negative integers")
        if datatype not in OIP_TO_NUMPY or datatype == "BF16":
            raise HttpError(400, f"input '{name}': datatype {datatype!r} is not supported in JSON")
        if (tensor.get("parameters") or {}).get("binary_data_size") is not None:
            raise HttpError(400, f"input '{name}': the binary data extension is not supported")
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(_array(name, datatype, shape, tensor["data"]))
    for i, output in enumerate(field(body, "outputs", list, []) or []):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise HttpError(400, f"outputs[{i}] must be an object with a name")
        request.outputs.add(name=output["name"])
    return request


def output_array(response: pb.ModelInferResponse, index: int) -> npt.NDArray[Any]:
    """Output `index` of a response as a numpy array (raw or typed contents)."""
    tensor = response.outputs[index]
    shape = tuple(int(d) for d in tensor.shape)
    if response.raw_output_contents:
        spec = TensorSpec(tensor.name, tensor.datatype, shape)
        return decode_raw(spec, shape, response.raw_output_contents[index])
    if tensor.datatype == "BYTES":
        array = np.empty(len(tensor.contents.bytes_contents), dtype=object)
        array[:] = list(tensor.contents.bytes_contents)
        return array.reshape(shape)
    field_name = CONTENTS_FIELD.get(tensor.datatype)
    if field_name is None:
        raise HttpError(500, f"output '{tensor.name}': {tensor.datatype} came without raw data")
    values = getattr(tensor.contents, field_name)
    return np.asarray(values, dtype=OIP_TO_NUMPY[tensor.datatype]).reshape(shape)


def _parameters(params: Any) -> dict[str, Any]:
    out = {}
    for key, param in params.items():
        kind = param.WhichOneof("parameter_choice")
        if kind:
            out[key] = getattr(param, kind)
    return out


def response_json(response: pb.ModelInferResponse) -> dict[str, Any]:
    outputs = []
    for index, tensor in enumerate(response.outputs):
        array = output_array(response, index).reshape(-1)
        if tensor.datatype == "BYTES":
            data: list[Any] = [bytes(x).decode("utf-8", "backslashreplace") for x in array]
        else:
            data = array.tolist()
        outputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "data": data,
            }
        )
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "parameters": _parameters(response.parameters),
        "outputs": outputs,
    }


async def infer_texts(
    services: Services, model: str, texts: list[str]
) -> tuple[npt.NDArray[np.float32], int]:
    """An embedding model's vectors for `texts` through `infer` (here or on a peer): its
    `embedding` output and, when it reports one, its `prompt_tokens`."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    array = np.empty(len(texts), dtype=object)
    array[:] = [t.encode("utf-8") for t in texts]
    request.raw_input_contents.append(encode_bytes(array))
    response = await services.infer(request, CallContext())
    names = [t.name for t in response.outputs]
    if "embedding" not in names:
        raise HttpError(400, f"model '{model}' has no 'embedding' output: it does not embed text")
    vectors = output_array(response, names.index("embedding")).astype(np.float32)
    tokens = 0
    if "prompt_tokens" in names:
        tokens = int(output_array(response, names.index("prompt_tokens")).reshape(-1)[0])
    return vectors.reshape(len(texts), -1), tokens


class KServeDoor:
    """The /v2 routes."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v2", self.server_metadata)
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            r.add_get(base, self.metadata)
            r.add_get(base + "/ready", self.model_ready)
            r.add_post(base + "/infer", self.infer)

    @staticmethod
    def _model(request: web.Request) -> tuple[str, str]:
        return request.match_info["model"], request.match_info.get("version", "")

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"name": "hatswarm-agent", "version": __version__, "extensions": []}
        )

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        ready = self.services.dataplane.state.ready
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def metadata(self, request: web.Request) -> web.Response:
        name, version = self._model(request)
        meta = model_metadata(self.services.dataplane.registry, name, version)

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [
                {"name": t.name, "datatype": t.datatype, "shape": [int(d) for d in t.shape]}
                for t in specs
            ]

        return web.json_response(
            {
                "name": meta.name,
                "versions": list(meta.versions),
                "platform": meta.platform,
                "inputs": tensors(meta.inputs),
                "outputs": tensors(meta.outputs),
            }
        )

    async def model_ready(self, request: web.Request) -> web.Response:
        name, version = self._model(request)
        try:
            self.services.dataplane.registry.get(name, version)
        except AgentError:
            return web.json_response({"name": name, "ready": False}, status=503)
        return web.json_response({"name": name, "ready": True})

    async def infer(self, request: web.Request) -> web.Response:
        name, version = self._model(request)
        body = await json_body(request)
        oip = request_from_json(name, version, body)
        response = await self.services.infer(oip, CallContext())
        return web.json_response(response_json(response))
