"""Response cache keys and bounds, the cloud share window, static tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.routing.cache import ResponseCache, request_key
from hatswarm_agent.routing.cloud import ShareWindow
from hatswarm_agent.routing.table import TableFileError, load_table_file, parse_peer, static_table


def _req(value: float = 1.0, request_id: str = "x") -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name="m", id=request_id)
    r.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    r.raw_input_contents.append(np.full(2, value, np.float32).tobytes())
    return r


def _resp(n: int = 10) -> pb.ModelInferResponse:
    r = pb.ModelInferResponse(model_name="m", model_version="1", id="orig")
    r.raw_output_contents.append(b"\0" * n)
    return r


def test_key_covers_inputs_and_parameters_but_not_id_or_priority() -> None:
    base = request_key(_req(), "1")
    assert request_key(_req(request_id="other"), "1") == base
    p = _req()
    p.parameters["priority"].int64_param = 9
    assert request_key(p, "1") == base
    assert request_key(_req(2.0), "1") != base
    assert request_key(_req(), "2") != base
    q = _req()
    q.parameters["temperature"].double_param = 0.5
    assert request_key(q, "1") != base
    shaped = _req()
    shaped.inputs[0].shape[:] = [2, 1]
    assert request_key(shaped, "1") != base
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([1, 1])
    assert request_key(typed, "1") != base


def test_hit_gets_the_request_id_ttl_and_lru_bounds() -> None:
    now = [0.0]
    cache = ResponseCache(max_entries=2, max_bytes=10_000, clock=lambda: now[0])
    k1, k2, k3 = (request_key(_req(v), "1") for v in (1, 2, 3))
    cache.put(k1, _resp(), 10)
    hit = cache.get(k1, "mine")
    assert hit is not None and hit.id == "mine"
    cache.put(k2, _resp(), 10)
    cache.get(k1, "")  # k1 is now the most recent
    cache.put(k3, _resp(), 10)
    assert cache.get(k2, "") is None and cache.get(k1, "") is not None
    now[0] = 11.0
    assert cache.get(k1, "") is None and len(cache) == 1
    cache.put(k1, _resp(), 0)  # ttl 0: never stored
    assert cache.get(k1, "") is None
    small = ResponseCache(max_entries=100, max_bytes=300)
    for v in range(10):
        small.put(request_key(_req(v), "1"), _resp(50), 10)
    assert small.size_bytes <= 300 and len(small) < 10
    assert cache.hits == 3 and cache.misses >= 3


def test_a_change_of_versions_invalidates_the_model() -> None:
    cache = ResponseCache()
    key = request_key(_req(), "1")
    cache.observe_versions("m", {"1"})
    cache.put(key, _resp(), 60)
    cache.observe_versions("m", {"1"})
    assert cache.get(key, "") is not None
    cache.observe_versions("m", {"1", "2"})
    assert cache.get(key, "") is None


def test_share_window_caps_the_cloud_share() -> None:
    now = [100.0]
    w = ShareWindow(window_s=10, clock=lambda: now[0])
    sent = 0
    for _ in range(100):
        w.request()
        if w.allow(0.1):
            w.sent()
            sent += 1
    assert sent == 10
    assert not w.allow(0.0)
    now[0] += 11  # the window slid past every request
    w.request()
    assert w.totals() == (1, 0)


def test_static_table_json_defaults_and_peers(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"routes": [{"model": "m", "endpoints": [{"address": "h:1"}]}], "retries": 0}')
    t = static_table(path, [parse_peer("m=h:2,3"), parse_peer("n:2=h:3")])
    assert t is not None
    assert t.retries == 0 and t.queue_limit == 64 and t.timeout_ms == 5000
    assert [e.address for e in t.routes[0].endpoints] == ["h:1", "h:2"]
    assert t.routes[0].endpoints[1].weight == 3
    assert (t.routes[1].model, t.routes[1].version) == ("n", "2")
    yaml_path = tmp_path / "t.yaml"
    yaml_path.write_text("queueLimit: 8\nroutes:\n- model: m\n  cacheTtlSeconds: 5\n")
    y = load_table_file(yaml_path)
    assert y.queue_limit == 8 and y.routes[0].cache_ttl_seconds == 5
    for bad in ("m", "m=host", "m=h:1,0", "m=h:1,x"):
        with pytest.raises(TableFileError):
            parse_peer(bad)
    path.write_text('{"routes": 3}')
    with pytest.raises(TableFileError):
        load_table_file(path)
