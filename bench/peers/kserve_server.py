"""KServe peer for the node-agent benchmark: onnxruntime models behind `kserve.ModelServer`.

Runs in its own venv (bench/out/venvs/kserve), never in the project's .venv:

    python bench/peers/kserve_server.py --grpc-port P --http-port H \
        --model cnn=/path/cnn.onnx --model mlp=/path/mlp.onnx [--tuned]

Two forms, both reported by the benchmark:
- default: a plain synchronous ``predict`` (KServe then runs it on its event loop) with KServe's
  default logging (a log line per request from its gRPC interceptor and latency logger);
- tuned (``--tuned``), the fair form: ``async predict`` handing ``session.run`` to a thread pool
  so requests overlap, sessions at 1 intra-op thread (the pool gives the parallelism), and
  per-request logging off.

Gotchas (DESIGN.md): ``kserve.model_server`` parses ``sys.argv`` at import, so our own flags are
parsed first and removed; metadata is empty unless ``get_input_types``/``get_output_types`` are
implemented; KServe also opens REST (8080 by default), so ``--http-port`` moves it to a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_ONNX_TO_V2 = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(uint8)": "UINT8",
    "tensor(int8)": "INT8",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(bool)": "BOOL",
}


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="KServe onnxruntime peer server")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument(
        "--model", action="append", default=[], help="name=path.onnx (none: 0-model RSS)"
    )
    parser.add_argument("--tuned", action="store_true")
    parser.add_argument("--pool-threads", type=int, default=4)
    return parser.parse_args()


ARGS = _parse_args()
sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv at import

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402


def _shape(dims: list[Any]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in dims]


class OnnxModel(Model):  # type: ignore[misc]
    """One onnxruntime session served as a KServe v2 model (the default, synchronous form)."""

    def __init__(self, name: str, path: str, intra_op_threads: int = 0) -> None:
        super().__init__(name)
        self.path = path
        self.intra_op_threads = intra_op_threads
        self.session: ort.InferenceSession | None = None
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        assert self.session is not None
        return [
            {"name": i.name, "datatype": _ONNX_TO_V2[i.type], "shape": _shape(i.shape)}
            for i in self.session.get_inputs()
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        assert self.session is not None
        return [
            {"name": o.name, "datatype": _ONNX_TO_V2[o.type], "shape": _shape(o.shape)}
            for o in self.session.get_outputs()
        ]

    def _run(self, payload: InferRequest) -> InferResponse:
        assert self.session is not None
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        results = self.session.run(None, feeds)
        outputs = []
        for meta, value in zip(self.session.get_outputs(), results, strict=True):
            array = np.asarray(value)
            datatype = _ONNX_TO_V2[meta.type]
            out = InferOutput(name=meta.name, shape=list(array.shape), datatype=datatype)
            out.set_data_from_numpy(array, binary_data=True)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            from_grpc=payload.from_grpc,
        )

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        return self._run(payload)


class TunedOnnxModel(OnnxModel):
    """The fair form: ``session.run`` on a thread pool so concurrent requests overlap."""

    def __init__(self, name: str, path: str, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        super().__init__(name, path, intra_op_threads=1)

    async def predict(  # type: ignore[override]
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._run, payload)


class Placeholder(Model):  # type: ignore[misc]
    """KServe refuses to start without a ready model: this one holds nothing (0-model RSS)."""

    def __init__(self) -> None:
        super().__init__("placeholder")
        self.ready = True


def main() -> None:
    specs = [spec.split("=", 1) for spec in ARGS.model]
    models: list[Model]
    if ARGS.tuned:
        pool = ThreadPoolExecutor(max_workers=ARGS.pool_threads, thread_name_prefix="ort")
        models = [TunedOnnxModel(name, path, pool) for name, path in specs]
        server = ModelServer(
            http_port=ARGS.http_port, grpc_port=ARGS.grpc_port, enable_latency_logging=False
        )
        for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
    else:
        models = [OnnxModel(name, path) for name, path in specs]
        server = ModelServer(http_port=ARGS.http_port, grpc_port=ARGS.grpc_port)
    server.start(models or [Placeholder()])


if __name__ == "__main__":
    main()
