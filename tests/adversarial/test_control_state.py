"""Attack 6: one client could evict a healthy node, or take its threads and memory.

Before issue 16, 120 LoadModel calls with long bogus URIs in 0.2 s left FAILED entries
forever; NodeStatus grew to 9.8 MB, over the operator client's 4 MB limit, and the node was
declared lost. Load options were unchecked (`intra_op_threads=200` took the agent from 11 to
210 threads; `queue_limit=2**62` was accepted). Now FAILED entries are bounded and expire,
reasons are cut short, and every option is range-checked with INVALID_ARGUMENT naming the
limit.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psutil
import pytest
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_operator.api import EdgeModel, InferencePool
from hatswarm_operator.api.manifests import parse_object
from hatswarm_operator.cli.demo import ready_nodes
from hatswarm_operator.local.pool import LocalPool
from hatswarm_operator.local.processes import bundled_manifests, default_nodes

from tests.adversarial.conftest import Files, bearer, control
from tests.agentproc import start_agent

pytestmark = pytest.mark.integration

FAILING_LOADS = 1000
STATUS_LIMIT = 64 << 10


@pytest.mark.slow
async def test_a_thousand_failing_loads_leave_the_node_small_and_in_the_pool(
    tmp_path: Path,
) -> None:
    state = tmp_path / "up"
    pool_doc, model_doc = bundled_manifests(state)
    pool, model = parse_object(pool_doc, "bundled"), parse_object(model_doc, "bundled")
    assert isinstance(pool, InferencePool) and isinstance(model, EdgeModel)
    nodes = default_nodes(2, dict(pool.spec.node_selector))
    async with LocalPool(pool, [model], nodes, state) as local:
        assert await local.wait(lambda s: len(ready_nodes(s, "shufflenet")) == 2, within=90)
        token_file = state / "secrets" / "hatswarm-control-local" / "token"
        md = bearer(token_file.read_text().strip()) if token_file.exists() else ()
        victim = local.agents["pi-01"]
        stub = control(victim.address)
        padding = "p" * 3900

        def bogus(i: int) -> grpc.StatusCode:
            request = control_pb2.LoadModelRequest(
                name=f"bogus-{i}",
                uri=f"http://127.0.0.1:9/{padding}/{i}.onnx",  # nothing listens there
                sha256="c" * 64,
            )
            try:
                stub.LoadModel(request, metadata=md, timeout=60)
            except grpc.RpcError as err:
                return err.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

        def hammer() -> list[grpc.StatusCode]:
            with ThreadPoolExecutor(16) as pool:
                return list(pool.map(bogus, range(FAILING_LOADS)))

        codes = await asyncio.to_thread(hammer)
        assert set(codes) == {grpc.StatusCode.OK}  # each one answered (FAILED), none refused
        status = await asyncio.to_thread(
            lambda: stub.NodeStatus(control_pb2.NodeStatusRequest(), metadata=md, timeout=10)
        )
        assert status.ByteSize() < STATUS_LIMIT, status.ByteSize()
        failed = [m for m in status.models if m.state == control_pb2.MODEL_STATE_FAILED]
        assert 0 < len(failed) < FAILING_LOADS
        assert all(len(m.reason) <= 512 for m in failed)
        # The node stays in the pool: the operator's probes keep reading its status.
        ticks = local.ticks
        assert await local.wait(lambda s: local.ticks >= ticks + 3, within=30)
        assert local.sink.pools["local"].nodes_ready == 2
        assert not [e for _, e in local.sink.events if e.reason == "NodeLost"]
        assert victim.spec.name in ready_nodes(local.sink, "shufflenet")


def test_every_load_option_is_range_checked(mlp: Path, http_files: Files) -> None:
    uri, digest = http_files.add("/mlp.onnx", mlp.read_bytes())
    with start_agent([]) as agent:
        threads = psutil.Process(agent.proc.pid).num_threads()
        stub = control(agent.address)
        for option, value, limit in (
            ("intra_op_threads", "200", "out of range: 0 to"),
            ("queue_limit", str(2**62), "out of range: 1 to 100000"),
            ("max_batch_size", "0", "out of range: 1 to 1024"),
            ("workers", "-1", "out of range: 1 to"),
            ("max_queue_delay_us", "1e9", "is not an integer"),
            ("hef", "../../etc/shadow", "plain file name"),
        ):
            request = control_pb2.LoadModelRequest(
                name="mlp", uri=uri, sha256=digest, options={option: value}
            )
            with pytest.raises(grpc.RpcError) as err:
                stub.LoadModel(request, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, option
            assert option in (err.value.details() or "") and limit in (err.value.details() or "")
        assert psutil.Process(agent.proc.pid).num_threads() < threads + 20
        assert not stub.NodeStatus(control_pb2.NodeStatusRequest()).models
