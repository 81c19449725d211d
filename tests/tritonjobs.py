"""tritonclient work run in a fresh child process (`run(fn, *args)`).

tritonclient's generated protobufs and hatswarm's own OIP stubs both define the protobuf package
`inference`, and one process's descriptor pool refuses the second set ("duplicate symbol").
The pytest process imports hatswarm's stubs, so every tritonclient call a test makes goes
through `run`, which executes a function of this module in a `spawn`ed child and returns its
(picklable) result. The client stays the real, unmodified tritonclient.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def run(fn: Callable[..., T], *args: Any, timeout: float = 300.0) -> T:
    """Call `fn(*args)` in a fresh interpreter; exceptions come back as exceptions."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply_async(fn, args).get(timeout)


def infer_many(
    url: str,
    model: str,
    input_name: str,
    shape: list[int],
    count: int,
    output: str,
    kill_pid: int | None = None,
    kill_at: int = -1,
    timeout_s: float = 15.0,
    token: str = "",
) -> dict[str, Any]:
    """`count` requests with distinct FP32 inputs (with `token` as the bearer token);
    optionally SIGKILL a pid before request `kill_at`. Returns ok/failed counts, errors,
    nodes that answered and output shapes."""
    import tritonclient.grpc as grpcclient

    headers = {"authorization": f"Bearer {token}"} if token else None

    client = grpcclient.InferenceServerClient(url)
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    out: dict[str, Any] = {"ok": 0, "failed": 0, "errors": [], "nodes": Counter(), "shapes": set()}
    try:
        for i in range(count):
            if i == kill_at and kill_pid is not None:
                os.kill(kill_pid, signal.SIGKILL)
            inp = grpcclient.InferInput(input_name, shape, "FP32")
            inp.set_data_from_numpy(data + i)  # distinct inputs: no cache hits
            try:
                res = client.infer(model, [inp], headers=headers, client_timeout=timeout_s)
            except Exception as err:  # reported to the test, which asserts there are none
                out["failed"] += 1
                out["errors"].append(str(err))
                continue
            out["ok"] += 1
            out["shapes"].add(tuple(res.as_numpy(output).shape))
            params = res.get_response().parameters
            if "hatswarm.node" in params:
                out["nodes"][params["hatswarm.node"].string_param] += 1
    finally:
        client.close()
    return out


def infer_series(address: str, plan: list[tuple[str, list[int], int, bool]]) -> list[str]:
    """For each (model, shape, count, must_fail): send `count` random FP32 inputs named `x`.
    Returns one message per unexpected outcome (empty when all went as planned)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(address)
    rng = np.random.default_rng(0)
    problems: list[str] = []
    try:
        for model, shape, count, must_fail in plan:
            for _ in range(count):
                inp = grpcclient.InferInput("x", shape, "FP32")
                inp.set_data_from_numpy(rng.random(shape, dtype=np.float32))
                try:
                    client.infer(model, [inp])
                except InferenceServerException as err:
                    if not must_fail:
                        problems.append(f"{model}: {err}")
                else:
                    if must_fail:
                        problems.append(f"{model} {shape}: expected an error")
    finally:
        client.close()
    return problems


def stream_generate(
    url: str,
    model: str,
    requests: list[dict[str, Any]],
    timeout_s: float = 60.0,
    headers: dict[str, str] | None = None,
    kill_pid: int | None = None,
) -> list[dict[str, Any]]:
    """Send generation requests (Triton vLLM-backend tensors) on one ModelStreamInfer stream
    with `start_stream`/`async_stream_infer`; return every response in arrival order as
    {id, text, final, error, params}. Each request dict: id, prompt, stream (bool), sampling
    (a dict, sent as the JSON `sampling_parameters`), empty_final (bool). With `kill_pid`, that
    process is SIGKILLed as soon as the first response arrives."""
    import json
    import queue
    import time

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    responses: queue.Queue[dict[str, Any]] = queue.Queue()

    def callback(result: Any, error: Any) -> None:
        if error is not None:
            responses.put({"id": None, "text": None, "final": None, "error": str(error)})
            return
        response = result.get_response()
        params = {
            k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()
        }
        text = result.as_numpy("text_output")
        responses.put(
            {
                "id": response.id,
                "text": None if text is None else b"".join(text.reshape(-1)).decode(),
                "final": params.get("triton_final_response"),
                "error": None,
                "params": params,
            }
        )

    out: list[dict[str, Any]] = []
    client.start_stream(callback=callback, headers=headers)
    try:
        for r in requests:
            text = grpcclient.InferInput("text_input", [1], "BYTES")
            text.set_data_from_numpy(np.array([r["prompt"].encode()], dtype=np.object_))
            stream = grpcclient.InferInput("stream", [1], "BOOL")
            stream.set_data_from_numpy(np.array([r.get("stream", True)], dtype=bool))
            sampling = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
            sampling.set_data_from_numpy(
                np.array([json.dumps(r.get("sampling", {})).encode()], dtype=np.object_)
            )
            try:
                client.async_stream_infer(
                    model,
                    [text, stream, sampling],
                    request_id=r["id"],
                    enable_empty_final_response=r.get("empty_final", False),
                )
            except InferenceServerException:
                # The server already ended the stream (a refused token): its error reaches the
                # callback. (Raised out of this child, the exception would not unpickle and
                # the parent would wait for its whole timeout.)
                break
        finals = 0
        deadline = time.monotonic() + timeout_s
        while finals < len(requests) and time.monotonic() < deadline:
            try:
                item = responses.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            out.append(item)
            if kill_pid is not None and len(out) == 1:
                os.kill(kill_pid, signal.SIGKILL)
            if item["final"] or item["error"]:
                finals += 1
    finally:
        client.stop_stream()
        client.close()
    return out


def model_configs(address: str, models: list[str]) -> dict[str, Any]:
    """tritonclient's `get_model_config` (as JSON) for each model; an error as its message."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(address)
    out: dict[str, Any] = {}
    try:
        for model in models:
            try:
                out[model] = client.get_model_config(model, as_json=True)["config"]
            except InferenceServerException as err:
                out[model] = {"error": err.status(), "message": err.message()}
    finally:
        client.close()
    return out


def repository_index(address: str) -> dict[str, Any]:
    """tritonclient's `get_model_repository_index` as JSON, plus `is_server_ready`."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(address)
    try:
        index = client.get_model_repository_index(as_json=True)
        return {"index": index.get("models", []), "server_ready": client.is_server_ready()}
    finally:
        client.close()


def infer_texts(url: str, model: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Plain `client.infer` (ModelInfer) generations, Triton vLLM-backend tensors: per request
    dict (prompt; optional sampling: a dict sent as JSON, or raw_sampling: bytes sent as they
    are; stream, exclude: bools sent as those inputs) {text, params} or {error: status,
    message}. Also the model's metadata and config as tritonclient reads them (or {error,
    message} where the agent has no config to give)."""
    import json

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    def tensor(name: str, datatype: str, value: Any) -> Any:
        item = grpcclient.InferInput(name, [1], datatype)
        kind = np.bool_ if datatype == "BOOL" else np.object_
        item.set_data_from_numpy(np.array([value], dtype=kind))
        return item

    client = grpcclient.InferenceServerClient(url)
    answers: list[dict[str, Any]] = []
    try:
        for r in requests:
            inputs = [tensor("text_input", "BYTES", r["prompt"].encode())]
            if "sampling" in r:
                inputs.append(tensor("sampling_parameters", "BYTES", json.dumps(r["sampling"])))
            if "raw_sampling" in r:
                inputs.append(tensor("sampling_parameters", "BYTES", r["raw_sampling"]))
            for key, name in (("stream", "stream"), ("exclude", "exclude_input_in_output")):
                if key in r:
                    inputs.append(tensor(name, "BOOL", r[key]))
            try:
                result = client.infer(model, inputs, client_timeout=60)
            except InferenceServerException as err:
                answers.append({"error": err.status(), "message": err.message()})
                continue
            response = result.get_response()
            params = {
                k: getattr(v, v.WhichOneof("parameter_choice"))
                for k, v in response.parameters.items()
            }
            text = b"".join(result.as_numpy("text_output").reshape(-1)).decode()
            answers.append({"text": text, "params": params})
        try:  # raised out of this child, the exception would not unpickle
            metadata = client.get_model_metadata(model, as_json=True)
            config = client.get_model_config(model, as_json=True)["config"]
        except InferenceServerException as err:
            metadata = config = {"error": err.status(), "message": err.message()}
    finally:
        client.close()
    return {"answers": answers, "metadata": metadata, "config": config}
