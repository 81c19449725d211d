"""The agents' HTTP doors in the chart and the operator's builders: the `httpPort` agent setting
(default 8000) reaches the agent's args, its container port and the pool Service's `http` port;
the NetworkPolicy lets the gRPC port's clients in on it; readiness stays on gRPC."""

from __future__ import annotations

from typing import Any

from hatswarm_operator.api import InferencePool
from hatswarm_operator.kube import builders

from .conftest import FULL_VALUES, Render, run_template
from .test_chart import agent_defaults, effective_pool

POOL = ["pool.enabled=true"]


def _agent_container(ds: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = ds["spec"]["template"]["spec"]["containers"][0]
    return container


def _http_port(pool: InferencePool) -> tuple[int, list[str], dict[str, Any]]:
    """(the Service's http port, every DaemonSet's --http-port and the http container port)."""
    service = builders.build_service(pool)
    (http,) = [p for p in service["spec"]["ports"] if p["name"] == "http"]
    seen: list[str] = []
    for ds in builders.build_daemonsets(pool):
        c = _agent_container(ds)
        args = c["args"]
        seen.append(args[args.index("--http-port") + 1])
        assert {"name": "http", "containerPort": http["port"], "protocol": "TCP"} in c["ports"]
        # readiness (and liveness) are unchanged: the gRPC health service, not the HTTP door
        assert c["readinessProbe"]["grpc"]["port"] == pool.spec.agent.port
        assert {"name": "TMPDIR", "value": builders.STATE_DIR} in c["env"]
    return http["port"], seen, http


def test_the_default_http_port_reaches_agents_and_the_pool_service(render: Render) -> None:
    objs = render(sets=POOL)
    assert agent_defaults(objs)["httpPort"] == 8000
    port, args, http = _http_port(effective_pool(objs))
    assert port == 8000 and set(args) == {"8000"}
    assert http == {
        "name": "http",
        "port": 8000,
        "targetPort": "http",
        "protocol": "TCP",
        "appProtocol": "http",
    }


def test_a_pool_sets_its_own_http_port(render: Render) -> None:
    objs = render(sets=[*POOL, "pool.agent.httpPort=8080", "agentDefaults.httpPort=9000"])
    port, args, _ = _http_port(effective_pool(objs))
    assert port == 8080 and set(args) == {"8080"}
    objs = render(sets=[*POOL, "agentDefaults.httpPort=9000"])
    port, args, _ = _http_port(effective_pool(objs))
    assert port == 9000 and set(args) == {"9000"}


def test_network_policy_admits_the_grpc_clients_on_http(render: Render) -> None:
    for objs in (render(), render(FULL_VALUES)):
        policies = {p["metadata"]["name"]: p["spec"] for p in objs if p["kind"] == "NetworkPolicy"}
        clients = policies["t-hatswarm-agents"]["ingress"][0]
        assert clients["ports"] == [
            {"port": "grpc", "protocol": "TCP"},
            {"port": "http", "protocol": "TCP"},
        ]
        # agent -> agent and operator -> agent stay on gRPC (generations forward over
        # ModelStreamInfer): no new egress
        assert policies["t-hatswarm-agents"]["egress"][1]["ports"] == [
            {"port": "grpc", "protocol": "TCP"}
        ]


def test_helm_test_checks_the_http_doors(render: Render) -> None:
    pod = next(o for o in render(sets=POOL) if o["kind"] == "Pod")
    script = pod["spec"]["containers"][0]["args"][0]
    compile(script, "helm-test", "exec")
    assert "http://%s:8000/v2/health/live" in script


def test_a_bad_http_port_names_the_field(helm4: str) -> None:
    for key in ("agentDefaults.httpPort", "pool.agent.httpPort"):
        proc = run_template(helm4, "--set", f"{key}=70000")
        assert proc.returncode != 0 and "httpPort" in proc.stderr, proc.stderr
