"""Fuzzing the control surface: any LoadModel, UnloadModel, SetRoutingTable or NodeStatus.

Two layers. In process, hypothesis drives the validators many thousands of times: a message is
either refused (INVALID_ARGUMENT, naming what is wrong) or, when accepted, keeps every promise
(generation in bounds, endpoints announced, no token path, options in range, files inside the
roots). Against a real agent holding the control token, random messages must never get an
INTERNAL or UNKNOWN answer, never read a file outside the roots, never grow NodeStatus past
its bound, and never stop the model it serves.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from hatswarm_agent.control.limits import (
    MAX_FAILED_ENTRIES,
    OPTION_LIMITS,
    check_load_request,
)
from hatswarm_agent.control.sources import ArtifactSources
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_agent.routing.table import MAX_GENERATION_AHEAD_MS, validate_pushed
from hatswarm_agent.serving.errors import InvalidInputError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adversarial.conftest import bearer, control, oip, private_file, sha256_of
from tests.agentproc import AgentProcess, start_agent
from tests.onnxmodels import build_mlp

pytestmark = pytest.mark.integration

KEEPER = "keeper-model"  # the model the agent serves throughout; the fuzz never names it
ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}
NOW_MS = int(time.time() * 1000)

# -- strategies --------------------------------------------------------------------------------

texts = st.text(max_size=40)
names = st.one_of(
    st.sampled_from(["m", "a" * 300, "../x", "x/y", "ü", " ", "mlp", "m:1", ""]), texts
).filter(lambda n: n != KEEPER)
numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["0", "1", "4", "200", "true", "no", "", "../../etc/shadow", "all"]),
    st.text(max_size=12),
)
options = st.dictionaries(
    st.one_of(st.sampled_from([*OPTION_LIMITS, "model_name", "uri", "junk"]), texts),
    numbers,
    max_size=4,
)
hexes = st.text(alphabet="0123456789abcdefABCDEF", max_size=70)
addresses = st.one_of(
    st.sampled_from(["127.0.0.1:9", "[::1]:9", "10.0.0.5:8001", "", "no-port", "a:b:c"]),
    st.builds(lambda p: f"127.0.0.1:{p}", st.integers(0, 99999)),
    texts,
)
reals = st.floats(allow_nan=True, allow_infinity=True)
int64s = st.integers(-(2**63), 2**63 - 1)


def uris(roots: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(roots),
        texts.map(lambda t: "file:///" + t),
        texts.map(lambda t: f"http://127.0.0.1:9/{t}"),
        st.sampled_from(["ftp://h/x", "file://remote/etc/passwd", "/etc/passwd", "", "x"]),
    )


def load_requests(
    roots: list[str], good_sha: str
) -> st.SearchStrategy[control_pb2.LoadModelRequest]:
    return st.builds(
        control_pb2.LoadModelRequest,
        name=names,
        version=st.one_of(st.just(""), texts),
        uri=uris(roots),
        sha256=st.one_of(st.just(""), st.just(good_sha), hexes),
        signature=st.one_of(st.just(""), texts),
        public_key=st.one_of(st.just(""), texts),
        backend=st.sampled_from(["", "onnxruntime", "simulated", "hailo", "nope"]),
        options=options,
        cache_ttl_seconds=int64s,
        adapters=st.lists(
            st.builds(control_pb2.AdapterArtifact, name=names, uri=uris(roots), sha256=hexes),
            max_size=2,
        ),
    )


endpoints = st.builds(control_pb2.Endpoint, node=texts, address=addresses, weight=reals)
routes = st.builds(
    control_pb2.Route,
    model=names,
    version=texts,
    endpoints=st.lists(endpoints, max_size=3),
    cache_ttl_seconds=int64s,
    cloud_fallback=st.booleans(),
    weight=reals,
    escalation_output=texts,
    escalation_threshold=reals,
    escalation_model=texts,
)
tables = st.builds(
    control_pb2.RoutingTable,
    generation=st.one_of(
        st.integers(0, 2**64 - 1), st.integers(NOW_MS - 10**6, NOW_MS + 2 * 86_400_000)
    ),
    routes=st.lists(routes, max_size=3),
    members=st.lists(st.builds(control_pb2.PoolMember, node=texts, address=addresses), max_size=3),
    cloud=st.builds(
        control_pb2.CloudFallback,
        endpoint=addresses,
        token_file=st.one_of(st.just(""), st.just("/etc/hostname"), texts),
        token_name=st.one_of(st.just(""), st.just("cloud"), texts),
        max_share=reals,
        price_per_1k_usd=reals,
        tls=st.booleans(),
    ),
    queue_limit=int64s,
    retries=st.integers(-(2**31), 2**31 - 1),
    timeout_ms=int64s,
    policy=st.one_of(st.sampled_from(["", "LeastLoaded", "RoundRobin"]), texts),
    hedge_after_percentile=reals,
    adapter_policy=st.one_of(st.sampled_from(["", "Affinity", "Ignore"]), texts),
)


# -- in process: the validators' promises --------------------------------------------------------


def refusal(call: Callable[[], object]) -> str | None:
    """The message of the INVALID_ARGUMENT error `call` raises; None when it passes."""
    try:
        call()
    except InvalidInputError as err:
        return str(err)
    return None


@settings(max_examples=3000, deadline=None)
@given(table=tables)
def test_an_accepted_table_keeps_every_promise(table: control_pb2.RoutingTable) -> None:
    why = refusal(lambda: validate_pushed(table, now_ms=NOW_MS, cloud_tokens={"cloud"}))
    if why is not None:
        assert why, "a refusal says what is wrong"
        return
    assert 1 <= table.generation <= NOW_MS + MAX_GENERATION_AHEAD_MS
    assert not table.cloud.token_file and table.cloud.token_name in ("", "cloud")
    members = {m.address for m in table.members}
    for route in table.routes:
        for ep in route.endpoints:
            assert not ep.address or ep.address in members
            assert math.isfinite(ep.weight) and ep.weight >= 0
        assert math.isfinite(route.weight) and math.isfinite(route.escalation_threshold)
    assert math.isfinite(table.cloud.max_share) and 0 <= table.cloud.max_share <= 1
    assert 0 <= table.retries <= 10 and 0 <= table.timeout_ms <= 600_000


@settings(
    max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_an_accepted_load_keeps_every_promise(tmp_path: Path, data: st.DataObject) -> None:
    root = tmp_path / "models"
    root.mkdir(exist_ok=True)
    request = data.draw(load_requests([str(root / "m.onnx"), f"file://{root}/../x"], "a" * 64))
    sources = ArtifactSources([root])
    why = refusal(lambda: check_load_request(request))
    if why is None:
        why = refusal(lambda: sources.check(request))
    if why is not None:
        assert why, "a refusal says what is wrong"
        return
    uri = sources.check(request)
    assert uri.startswith("http") or Path(uri).is_relative_to(root.resolve())
    assert request.sha256
    for key, value in request.options.items():
        limit = OPTION_LIMITS.get(key)
        if limit is not None and value and limit.kind == "int":
            assert limit.low <= int(value) <= limit.high
        if limit is not None and value and limit.kind == "float":
            assert math.isfinite(float(value)) and limit.low <= float(value) <= limit.high


# -- a real agent --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Path, str]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    models = tmp / "models"
    models.mkdir()
    keeper = build_mlp(models / "keeper.onnx", in_dim=8, hidden=16, out=4)
    private_file(tmp / "node" / "secret", "s3cret\n")
    (models / "escape").symlink_to(tmp / "node" / "secret")
    private_file(tmp / "control", "operator-token\n")
    state = tmp / "state"
    agent = start_agent(
        ["--model", f"{KEEPER}={keeper}", "--state-dir", str(state),
         "--allow-file-root", str(models), "--control-token-file", str(tmp / "control"),
         "--cloud-token", f"cloud={tmp / 'control'}"]
    )  # fmt: skip
    try:
        yield agent, tmp, sha256_of(keeper)
    finally:
        agent.stop()


def answer(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.slow
def test_random_control_messages_never_break_the_agent(
    target: tuple[AgentProcess, Path, str],
) -> None:
    agent, tmp, good_sha = target
    md = bearer("operator-token")
    stub = control(agent.address)
    models = tmp / "models"
    roots = [str(models / "keeper.onnx"), str(models / "escape"), f"file://{models}/../node/secret"]
    messages = st.one_of(
        load_requests(roots, good_sha).map(lambda r: ("LoadModel", r)),
        st.builds(control_pb2.UnloadModelRequest, name=names, version=texts).map(
            lambda r: ("UnloadModel", r)
        ),
        tables.map(lambda t: ("SetRoutingTable", t)),
        st.just(("NodeStatus", control_pb2.NodeStatusRequest())),
    )
    seen: list[tuple[str, grpc.StatusCode]] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(message=messages)
    def send(message: tuple[str, object]) -> None:
        method, request = message
        code = answer(lambda: getattr(stub, method)(request, metadata=md, timeout=60))
        seen.append((method, code))
        assert code in ANSWERS, (method, code, request)

    send()
    assert {m for m, _ in seen} >= {"LoadModel", "SetRoutingTable"}
    codes = {c for _, c in seen}
    assert {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT} <= codes  # both paths ran

    # Afterwards: a clean table (newer than anything the fuzz may have pushed) and the
    # model it served all along answers.
    clean = control_pb2.RoutingTable(
        generation=int(time.time() * 1000) + 86_400_000 - 10, queue_limit=64, timeout_ms=5000
    )
    stub.SetRoutingTable(clean, metadata=md, timeout=10)
    req = control_pb2.NodeStatusRequest()
    status = stub.NodeStatus(req, metadata=md, timeout=10)
    assert status.ByteSize() < 64 << 10
    failed = [m for m in status.models if m.state == control_pb2.MODEL_STATE_FAILED]
    assert len(failed) <= MAX_FAILED_ENTRIES
    from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb

    infer = pb.ModelInferRequest(model_name=KEEPER)
    infer.inputs.add(name="x", datatype="FP32", shape=[1, 8])
    infer.raw_input_contents.append(np.ones((1, 8), np.float32).tobytes())
    assert oip(agent.address).ModelInfer(infer, timeout=30).model_name == KEEPER
    # Nothing but verified artifacts entered the cache: never the secret behind the roots.
    cached = {p.name for p in (tmp / "state" / "artifacts" / "sha256").iterdir()}
    assert cached <= {good_sha}, cached
    assert os.stat(tmp / "node" / "secret").st_mode & 0o077 == 0
