"""The do-nothing floor for the node-agent benchmark: an OIP server that computes nothing.

grpc.aio with the agent's own generated stubs (same proto, same message limits), one ModelInfer
handler that answers every request with zeros of the model's real output shape, made once at
start. What any Python gRPC server must pay for a request of that size (the protobuf parse of
the request, the reply's serialisation, the event loop) is all it measures: the floor under
every server in the table.

With ``--hold cnn=0.0066`` it still computes nothing but answers each request only after a
worker thread has slept that long (the model's raw run time): a server that waits as long as
the model runs, as every real server does. On a machine where a process idle for milliseconds
wakes slowly (a VM whose vCPUs halt), the gap between the two floors is what any server pays
for a model that long, before any work of its own.

    python bench/peers/floor_server.py --port P --output cnn=logits:FP32:1x1000 [--hold cnn=S]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from hatswarm_agent.protocol.datatypes import OIP_TO_NUMPY
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc


class Floor(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, outputs: dict[str, tuple[str, str, list[int]]], holds: dict[str, float]
    ) -> None:
        self.outputs = outputs
        self.holds = holds
        # As many sleepers as a server has model threads (2 cores: 2): 8 clients overlap.
        self.sleepers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hold")
        self.replies: dict[str, pb.ModelInferResponse] = {}
        for model, (name, datatype, shape) in outputs.items():
            reply = pb.ModelInferResponse(model_name=model, model_version="1")
            reply.outputs.add(name=name, datatype=datatype, shape=shape)
            size = math.prod(shape) * OIP_TO_NUMPY[datatype].itemsize
            reply.raw_output_contents.append(np.zeros(size, np.uint8).tobytes())
            self.replies[model] = reply

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:  # noqa: N802
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name in self.replies)

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        reply = self.replies.get(request.model_name)
        if reply is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_name}")
        hold = self.holds.get(request.model_name)
        if hold:
            await asyncio.get_running_loop().run_in_executor(self.sleepers, time.sleep, hold)
        return reply


def parse_hold(text: str) -> tuple[str, float]:
    model, _, seconds = text.partition("=")
    return model, float(seconds)


def parse_output(text: str) -> tuple[str, tuple[str, str, list[int]]]:
    model, _, spec = text.partition("=")
    name, datatype, shape = spec.rsplit(":", 2)
    return model, (name, datatype, [int(d) for d in shape.split("x")])


async def serve(
    port: int, outputs: dict[str, tuple[str, str, list[int]]], holds: dict[str, float]
) -> None:
    limit = 64 << 20
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(outputs, holds), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor ready on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output", action="append", default=[], type=parse_output)
    parser.add_argument("--hold", action="append", default=[], type=parse_hold)
    args = parser.parse_args()
    asyncio.run(serve(args.port, dict(args.output), dict(args.hold)))


if __name__ == "__main__":
    main()
