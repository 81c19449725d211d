"""The request path as server.py wires it: servicer -> dispatcher -> data plane, or, with no
dispatcher, servicer -> data plane. An in-process agent on loopback."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_agent.protocol.wire import HOP_METADATA, NODE_PARAM, ROUTE_PARAM
from hatswarm_agent.server import Agent, AgentConfig

from tests.onnxmodels import build_mlp

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("dispatch", [True, False])
async def test_one_way_request_path(tmp_path: Path, dispatch: bool) -> None:
    path = build_mlp(tmp_path / "m.onnx", in_dim=4, hidden=8, out=3)
    config = AgentConfig(
        port=0, node_name="n1", models=[control_pb2.LoadModelRequest(name="m", uri=str(path))]
    )
    agent = Agent(config, dispatch=dispatch)
    assert (agent.dispatcher is not None) is dispatch
    await agent.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            req = pb.ModelInferRequest(model_name="m")
            req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
            req.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
            for metadata in ((), HOP_METADATA):
                response = await stub.ModelInfer(req, metadata=metadata)
                params = response.parameters
                if dispatch:  # the dispatcher says where it ran
                    assert params[NODE_PARAM].string_param == "n1"
                    assert params[ROUTE_PARAM].string_param == "local"
                else:  # nothing routes: the data plane answers as it is
                    assert NODE_PARAM not in params and ROUTE_PARAM not in params
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.ModelInfer(pb.ModelInferRequest(model_name="nope"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await agent.stop()
