"""Generations on Triton's ModelStreamInfer: vLLM-backend tensors <-> GenerationCall, pieces ->
responses. Pure conversion, used by the servicer (requests in, responses out) and by the router
(the same messages, the other way round, when a generation runs on a peer).

A request carries `text_input` (BYTES [1]), optionally `stream` (BOOL [1]),
`sampling_parameters` (a JSON object in BYTES [1]) and `exclude_input_in_output` (BOOL [1]),
as Triton's vLLM backend takes them; sampling parameters may also come as request parameters.
Chat messages come as the `hatswarm.messages` parameter (JSON) instead of `text_input`.
Streaming, each piece of text is one response (`text_output`, BYTES [1]); the last response has
`triton_final_response` true and says why and how many tokens (`hatswarm.finish_reason`,
`hatswarm.prompt_tokens`, `hatswarm.completion_tokens`, and the runtime's own time when measured:
`hatswarm.runtime_prompt_s`, `hatswarm.runtime_decode_s`, `hatswarm.runtime_decode_tokens`). Not streaming, one response carries
the whole text, prompt first unless `exclude_input_in_output` (vLLM's defaults). An error is a
response with `error_message` (and the status code's name in `hatswarm.code`); the stream stays
open for the caller's other requests.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hatswarm_agent.backends.base import TensorSpec
from hatswarm_agent.backends.generation import (
    GenerationParams,
    GenerationRequestError,
    Piece,
    Prompt,
    Timings,
    Usage,
    check_messages,
)
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import (
    CODE_PARAM,
    COMPLETION_TOKENS_PARAM,
    DECODE_SECONDS_PARAM,
    DECODE_TOKENS_PARAM,
    EMPTY_FINAL_PARAM,
    EXCLUDE_INPUT,
    FINAL_PARAM,
    FINISH_PARAM,
    MESSAGES_PARAM,
    NODE_PARAM,
    PROMPT_SECONDS_PARAM,
    PROMPT_TOKENS_PARAM,
    ROUTE_PARAM,
    SAMPLING_INPUT,
    SESSION_PARAM,
    STREAM_INPUT,
    TEXT_INPUT,
    TEXT_OUTPUT,
    TOKENS_PARAM,
)
from hatswarm_agent.serving.errors import InvalidInputError, status_for
from hatswarm_agent.serving.generation import GenerationCall
from hatswarm_agent.serving.tensors import decode_raw, decode_typed

# Sampling parameters a request may also give as request parameters (vLLM backend 24.x+).
SAMPLING_PARAMS = frozenset(
    {"max_tokens", "max_new_tokens", "temperature", "top_p", "top_k", "seed", "stop"}
)
_INPUTS = {
    TEXT_INPUT: "BYTES",
    STREAM_INPUT: "BOOL",
    SAMPLING_INPUT: "BYTES",
    EXCLUDE_INPUT: "BOOL",
}


@dataclass(frozen=True)
class StreamRequest:
    """A decoded generation request and how to answer it."""

    call: GenerationCall
    stream: bool  # one response per piece
    exclude_input: bool  # leave the prompt out of text_output
    empty_final: bool  # the last response may have no outputs (tritonclient's option)
    raw: bool  # answer in raw_output_contents (the request used raw_input_contents)


def is_generation_request(request: pb.ModelInferRequest) -> bool:
    """Whether a request looks like a generation (for a model this node does not hold)."""
    return MESSAGES_PARAM in request.parameters or any(t.name == TEXT_INPUT for t in request.inputs)


def _param_value(param: pb.InferParameter) -> Any:
    kind = param.WhichOneof("parameter_choice")
    return getattr(param, kind) if kind else None


def _one(request: pb.ModelInferRequest, index: int) -> Any:
    """The single element of input `index` (any shape holding exactly one)."""
    tensor = request.inputs[index]
    datatype = _INPUTS.get(tensor.name)
    if datatype is None:
        names = ", ".join(_INPUTS)
        raise InvalidInputError(
            f"unexpected input '{tensor.name}': a generative model takes {names}"
        )
    if tensor.datatype != datatype:
        raise InvalidInputError(
            f"input '{tensor.name}': datatype {tensor.datatype or '(empty)'}, expected {datatype}"
        )
    shape = tuple(tensor.shape)
    if any(d != 1 for d in shape):
        raise InvalidInputError(f"input '{tensor.name}': shape {list(shape)}, expected [1]")
    spec = TensorSpec(tensor.name, datatype, shape)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != len(request.inputs):
            raise InvalidInputError(
                f"raw_input_contents has {len(request.raw_input_contents)} entries for "
                f"{len(request.inputs)} inputs"
            )
        array = decode_raw(spec, shape, request.raw_input_contents[index])
    else:
        array = decode_typed(spec, shape, tensor.contents)
    return array.reshape(-1)[0]


def _text(value: Any, name: str) -> str:
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise InvalidInputError(f"input '{name}' is not UTF-8 text") from None


def sampling_params(raw: Any, parameters: Mapping[str, pb.InferParameter]) -> GenerationParams:
    """The sampling parameters of a request: the `sampling_parameters` input (a JSON object;
    None when not given), overridden by request parameters of vLLM's names; InvalidInputError
    naming the input when it is wrong."""
    sampling: dict[str, Any] = {}
    if raw is not None:
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInputError(f"input '{SAMPLING_INPUT}' is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidInputError(f"input '{SAMPLING_INPUT}' must be a JSON object")
        sampling.update(doc)
    given = SAMPLING_PARAMS & parameters.keys()
    for key in given:
        sampling[key] = _param_value(parameters[key])
    try:
        return GenerationParams.from_mapping(sampling)
    except GenerationRequestError as exc:
        where = f"input '{SAMPLING_INPUT}'" if not given else "sampling parameters"
        raise InvalidInputError(f"{where}: {exc}") from None


def model_infer_options(
    inputs: Mapping[str, Any], parameters: Mapping[str, pb.InferParameter]
) -> tuple[GenerationParams, bool]:
    """What a ModelInfer (not streaming) of a generative model asks besides its prompt: the
    sampling parameters and whether the answer leaves the prompt out (the default: the answer
    is the completion alone). `stream` true is refused: one answer cannot stream."""
    raw = inputs.get(SAMPLING_INPUT)
    if raw is not None:
        raw = np.asarray(raw, dtype=object).reshape(-1)[0]
    if STREAM_INPUT in inputs and bool(np.asarray(inputs[STREAM_INPUT]).reshape(-1)[0]):
        raise InvalidInputError(
            f"input '{STREAM_INPUT}' is true: ModelInfer answers once; stream with "
            "ModelStreamInfer (tritonclient's start_stream / async_stream_infer)"
        )
    exclude = True
    if EXCLUDE_INPUT in inputs:
        exclude = bool(np.asarray(inputs[EXCLUDE_INPUT]).reshape(-1)[0])
    return sampling_params(raw, parameters), exclude


def decode_generation(request: pb.ModelInferRequest) -> StreamRequest:
    """The generation a ModelStreamInfer request asks for; InvalidInputError naming what is
    wrong otherwise."""
    values: dict[str, Any] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in values:
            raise InvalidInputError(f"input '{tensor.name}' given twice")
        values[tensor.name] = _one(request, index)
    params = request.parameters
    prompt: Prompt
    if MESSAGES_PARAM in params:
        try:
            messages = json.loads(params[MESSAGES_PARAM].string_param)
        except ValueError as exc:
            raise InvalidInputError(f"parameter '{MESSAGES_PARAM}' is not JSON: {exc}") from None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise InvalidInputError(f"parameter '{MESSAGES_PARAM}' must be a list of messages")
        prompt = check_messages(messages)
    elif TEXT_INPUT in values:
        prompt = _text(values[TEXT_INPUT], TEXT_INPUT)
    else:
        raise InvalidInputError(f"input '{TEXT_INPUT}' (BYTES [1]) is required")
    generation = sampling_params(values.get(SAMPLING_INPUT), params)
    stream = bool(values.get(STREAM_INPUT, False))
    exclude = bool(values.get(EXCLUDE_INPUT, stream))
    empty_final = EMPTY_FINAL_PARAM in params and bool(_param_value(params[EMPTY_FINAL_PARAM]))
    session = params[SESSION_PARAM].string_param if SESSION_PARAM in params else ""
    call = GenerationCall(request.model_name, request.model_version, prompt, generation, session)
    return StreamRequest(call, stream, exclude, empty_final, bool(request.raw_input_contents))


# -- responses -----------------------------------------------------------------------------------


def _response(request: pb.ModelInferRequest, final: bool) -> pb.ModelStreamInferResponse:
    out = pb.ModelStreamInferResponse()
    r = out.infer_response
    r.model_name = request.model_name
    r.model_version = request.model_version
    r.id = request.id
    r.parameters[FINAL_PARAM].bool_param = final
    return out


def _add_text(response: pb.ModelInferResponse, text: str, raw: bool) -> None:
    data = text.encode("utf-8")
    tensor = response.outputs.add(name=TEXT_OUTPUT, datatype="BYTES", shape=[1])
    if raw:
        response.raw_output_contents.append(struct.pack("<I", len(data)) + data)
    else:
        tensor.contents.bytes_contents.append(data)


def piece_response(
    request: pb.ModelInferRequest, piece: Piece, raw: bool, node: str = "", route: str = ""
) -> pb.ModelStreamInferResponse:
    """One streamed piece (not final); the first names the node generating it."""
    out = _response(request, final=False)
    r = out.infer_response
    _add_text(r, piece.text, raw)
    r.parameters[TOKENS_PARAM].int64_param = piece.tokens
    if node:
        r.parameters[NODE_PARAM].string_param = node
        r.parameters[ROUTE_PARAM].string_param = route
    return out


def final_response(
    request: pb.ModelInferRequest,
    finish_reason: str,
    usage: Usage,
    *,
    text: str | None,
    raw: bool,
    node: str,
    route: str,
    timings: Timings | None = None,
) -> pb.ModelStreamInferResponse:
    """The last response: `text` as its text_output (None: no outputs), the finish reason and
    the token usage, where it ran, and the runtime's own time when measured."""
    out = _response(request, final=True)
    r = out.infer_response
    if text is not None:
        _add_text(r, text, raw)
    p = r.parameters
    p[FINISH_PARAM].string_param = finish_reason
    p[PROMPT_TOKENS_PARAM].int64_param = usage.prompt_tokens
    p[COMPLETION_TOKENS_PARAM].int64_param = usage.completion_tokens
    p[NODE_PARAM].string_param = node
    p[ROUTE_PARAM].string_param = route
    if timings is not None:
        p[PROMPT_SECONDS_PARAM].double_param = timings.prompt_s
        p[DECODE_SECONDS_PARAM].double_param = timings.decode_s
        p[DECODE_TOKENS_PARAM].int64_param = timings.decode_tokens
    return out


def error_response(
    request: pb.ModelInferRequest, exc: BaseException
) -> pb.ModelStreamInferResponse:
    """The error of one request (final: nothing more comes for it); the status code's name in
    `hatswarm.code` so a forwarding agent can tell a full peer from a bad request."""
    code, message, _ = status_for(exc)
    out = _response(request, final=True)
    out.error_message = message
    out.infer_response.parameters[CODE_PARAM].string_param = code.name
    return out


def unary_response(response: pb.ModelInferResponse) -> pb.ModelStreamInferResponse:
    """A ModelInfer answer on the stream (a model that is not generative): one, final."""
    response.parameters[FINAL_PARAM].bool_param = True
    return pb.ModelStreamInferResponse(infer_response=response)


# -- the other way round: a generation sent to a peer ------------------------------------------


def params_json(params: GenerationParams) -> str:
    """GenerationParams as the JSON `sampling_parameters` GenerationParams.from_mapping reads."""
    doc: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
    }
    if params.max_tokens is not None:
        doc["max_tokens"] = params.max_tokens
    if params.seed is not None:
        doc["seed"] = params.seed
    if params.stop:
        doc["stop"] = list(params.stop)
    return json.dumps(doc)


def encode_generation(call: GenerationCall, request_id: str = "") -> pb.ModelInferRequest:
    """A streaming ModelStreamInfer request for `call`, pieces only (no prompt echoed)."""
    request = pb.ModelInferRequest(model_name=call.model, model_version=call.version, id=request_id)

    def add(name: str, datatype: str, value: Any) -> None:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1])
        if datatype == "BOOL":
            tensor.contents.bool_contents.append(bool(value))
        else:
            tensor.contents.bytes_contents.append(str(value).encode("utf-8"))

    if isinstance(call.prompt, str):
        add(TEXT_INPUT, "BYTES", call.prompt)
    else:
        messages = [dict(m) for m in call.prompt]
        request.parameters[MESSAGES_PARAM].string_param = json.dumps(messages)
    add(STREAM_INPUT, "BOOL", True)
    add(EXCLUDE_INPUT, "BOOL", True)
    add(SAMPLING_INPUT, "BYTES", params_json(call.params))
    if call.session:
        request.parameters[SESSION_PARAM].string_param = call.session
    return request


def is_final(response: pb.ModelInferResponse) -> bool:
    p = response.parameters
    return FINAL_PARAM in p and p[FINAL_PARAM].bool_param


def read_text(response: pb.ModelInferResponse) -> str:
    """The text_output of a response ('' when it has none)."""
    for index, tensor in enumerate(response.outputs):
        if tensor.name != TEXT_OUTPUT:
            continue
        if response.raw_output_contents:
            data = response.raw_output_contents[index]
            shape = tuple(tensor.shape)
            items = decode_raw(TensorSpec(TEXT_OUTPUT, "BYTES", shape), shape, data)
            return "".join(_text(x, TEXT_OUTPUT) for x in items.reshape(-1))
        return "".join(_text(x, TEXT_OUTPUT) for x in tensor.contents.bytes_contents)
    return ""


def read_piece(response: pb.ModelInferResponse) -> Piece:
    p = response.parameters
    tokens = int(p[TOKENS_PARAM].int64_param) if TOKENS_PARAM in p else 0
    return Piece(read_text(response), tokens)


def read_end(response: pb.ModelInferResponse) -> tuple[str, Usage]:
    """The finish reason and usage a final response reports."""
    p = response.parameters
    reason = p[FINISH_PARAM].string_param if FINISH_PARAM in p else "stop"
    prompt = int(p[PROMPT_TOKENS_PARAM].int64_param) if PROMPT_TOKENS_PARAM in p else 0
    completion = int(p[COMPLETION_TOKENS_PARAM].int64_param) if COMPLETION_TOKENS_PARAM in p else 0
    return reason, Usage(prompt, completion)


def read_timings(response: pb.ModelInferResponse) -> Timings | None:
    """The runtime's own time a final response reports, if the node measured it."""
    p = response.parameters
    if PROMPT_SECONDS_PARAM not in p:
        return None
    return Timings(
        p[PROMPT_SECONDS_PARAM].double_param,
        p[DECODE_SECONDS_PARAM].double_param if DECODE_SECONDS_PARAM in p else 0.0,
        int(p[DECODE_TOKENS_PARAM].int64_param) if DECODE_TOKENS_PARAM in p else 0,
    )


def error_code(response: pb.ModelStreamInferResponse) -> str:
    """The status code name an error response carries (UNKNOWN when it does not say)."""
    p = response.infer_response.parameters
    return p[CODE_PARAM].string_param if CODE_PARAM in p else "UNKNOWN"
