"""The operator's agent client: bearer metadata, rotation fallback, TLS channels (no sockets)."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from hatswarm_agent.protocol.v1 import control_pb2
from hatswarm_operator.api import InferencePool
from hatswarm_operator.control.agentclient import AgentClient
from hatswarm_operator.control.credentials import AgentCredentials
from hatswarm_operator.kube import handlers
from hatswarm_operator.kube.cluster import Cluster
from hatswarm_operator.kube.main import build_parser
from hatswarm_operator.local.secrets import local_auth_args, local_credentials

from tests.unit.operator.factories import make_pool


class Unauthenticated(grpc.aio.AioRpcError):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            "invalid bearer token",
        )


@dataclass
class FakeStub:
    """Stands in for AgentControlStub: records metadata, accepts only `accepted` tokens."""

    accepted: set[str]
    seen: list[tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=list)

    def _check(self, method: str, metadata: Any) -> None:
        md = tuple(metadata or ())
        self.seen.append((method, md))
        presented = {v.removeprefix("Bearer ") for k, v in md if k == "authorization"}
        if self.accepted and not presented & self.accepted:
            raise Unauthenticated()

    async def NodeStatus(self, req: Any, **kw: Any) -> Any:  # noqa: N802
        self._check("NodeStatus", kw["metadata"])
        return control_pb2.NodeStatusResponse(node_name="pi-1")

    async def LoadModel(self, req: Any, **kw: Any) -> Any:  # noqa: N802
        self._check("LoadModel", kw["metadata"])
        return control_pb2.ModelStatus(name=req.name)

    async def UnloadModel(self, req: Any, **kw: Any) -> Any:  # noqa: N802
        self._check("UnloadModel", kw["metadata"])
        return control_pb2.UnloadModelResponse(unloaded_versions=["1"])

    async def SetRoutingTable(self, req: Any, **kw: Any) -> Any:  # noqa: N802
        self._check("SetRoutingTable", kw["metadata"])
        return control_pb2.SetRoutingTableResponse(generation=req.generation)


def client_with(stub: FakeStub, creds: AgentCredentials | None = None) -> AgentClient:
    c = AgentClient(credentials=creds)
    c._stub = lambda address: stub  # type: ignore[method-assign,assignment,return-value]
    return c


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_every_control_call_carries_the_bearer_token() -> None:
    stub = FakeStub({"s3cret"})
    c = client_with(stub, AgentCredentials(token="s3cret"))

    async def calls() -> None:
        await c.status("a:1")
        await c.load("a:1", control_pb2.LoadModelRequest(name="m"))
        await c.unload("a:1", "m", "")
        await c.set_routing("a:1", control_pb2.RoutingTable(generation=3))

    run(calls())
    assert [m for m, _ in stub.seen] == [
        "NodeStatus",
        "LoadModel",
        "UnloadModel",
        "SetRoutingTable",
    ]
    assert all(md == (("authorization", "Bearer s3cret"),) for _, md in stub.seen)


def test_no_token_no_metadata() -> None:
    stub = FakeStub(set())
    run(client_with(stub).status("a:1"))
    assert stub.seen == [("NodeStatus", ())]


def test_rotation_falls_back_to_the_previous_token_until_the_agent_reloads() -> None:
    stub = FakeStub({"old"})
    c = client_with(stub, AgentCredentials(token="old"))
    run(c.status("a:1"))
    run(c.set_credentials(AgentCredentials(token="new")))
    # The agent has not re-read its mounted file yet, and it last took the old token: the
    # client keeps using that one for it (one call, not a failure and a retry each time).
    run(c.status("a:1"))
    assert [md for _, md in stub.seen[1:]] == [(("authorization", "Bearer old"),)]
    # A fresh agent address tries the new token first, then falls back to the old one.
    stub.seen.clear()
    run(c.status("b:1"))
    assert [md[0][1] for _, md in stub.seen] == ["Bearer new", "Bearer old"]
    # The agent reloads: the new token is tried second, then first from then on.
    stub.accepted = {"new"}
    stub.seen.clear()
    run(c.status("a:1"))
    run(c.status("a:1"))
    assert [md[0][1] for _, md in stub.seen] == ["Bearer old", "Bearer new", "Bearer new"]


def test_a_wrong_token_is_unauthenticated_not_retried_forever() -> None:
    stub = FakeStub({"right"})
    c = client_with(stub, AgentCredentials(token="wrong"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        run(c.status("a:1"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(stub.seen) == 1


class FakeChannel:
    def unary_unary(self, *args: Any, **kwargs: Any) -> None:
        return None

    def unary_stream(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def close(self) -> None:
        return None


def test_tls_channels_use_the_pool_ca_and_client_certificate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[tuple[str, Any, Any]] = []
    ssl: list[dict[str, Any]] = []

    def ssl_creds(**kw: Any) -> str:
        ssl.append(kw)
        return "creds"

    def secure(address: str, creds: Any, options: Any) -> FakeChannel:
        built.append(("secure", creds, options))
        return FakeChannel()

    def insecure(address: str, options: Any) -> FakeChannel:
        built.append(("insecure", None, options))
        return FakeChannel()

    monkeypatch.setattr("grpc.ssl_channel_credentials", ssl_creds)
    monkeypatch.setattr("grpc.aio.secure_channel", secure)
    monkeypatch.setattr("grpc.aio.insecure_channel", insecure)
    creds = AgentCredentials(tls=True, ca_pem=b"CA", cert_pem=b"CERT", key_pem=b"KEY")
    c = AgentClient(credentials=creds)
    c._stub("10.0.0.1:50051")
    c._stub("10.0.0.1:50051")  # cached
    assert [b[0] for b in built] == ["secure"]
    assert ssl == [
        {"root_certificates": b"CA", "private_key": b"KEY", "certificate_chain": b"CERT"}
    ]
    # A new token keeps the channels; new TLS material replaces them.
    c._channels = {}
    run(c.set_credentials(AgentCredentials(token="t", tls=True, ca_pem=b"CA")))
    c._stub("10.0.0.1:50051")
    run(AgentClient().set_credentials(AgentCredentials()))
    plain = AgentClient()
    plain._stub("10.0.0.2:50051")
    assert [b[0] for b in built] == ["secure", "secure", "insecure"]
    assert "KEY" not in repr(creds)
    assert "zzz" not in repr(AgentCredentials(token="zzz"))


def test_token_change_keeps_channels_tls_change_drops_them() -> None:
    closed: list[str] = []

    class Channel:
        def __init__(self, name: str) -> None:
            self.name = name

        async def close(self) -> None:
            closed.append(self.name)

    c = AgentClient(credentials=AgentCredentials(token="a"))
    c._channels = {"x:1": Channel("x")}
    run(c.set_credentials(AgentCredentials(token="b")))
    assert closed == [] and "x:1" in c._channels
    run(c.set_credentials(AgentCredentials(token="b", tls=True)))
    assert closed == ["x"] and c._channels == {}


# --- the kopf adapter: Secrets -> credentials --------------------------------------------------


class FakeCore:
    """Stands in for CoreV1Api's Secret calls (the kubernetes client; no API server)."""

    def __init__(self, secrets: dict[str, dict[str, bytes]]) -> None:
        self.secrets = secrets
        self.reads = 0
        self.created: list[dict[str, Any]] = []

    def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        self.reads += 1
        if name not in self.secrets:
            raise ApiException(status=404, reason="Not Found")
        data = {k: base64.b64encode(v).decode() for k, v in self.secrets[name].items()}

        class Resp:
            pass

        resp = Resp()
        resp.data = json.dumps({"data": data}).encode()  # type: ignore[attr-defined]
        return resp

    def create_namespaced_secret(self, namespace: str, body: dict[str, Any]) -> None:
        self.created.append(body)
        data = {k: base64.b64decode(v) for k, v in body["data"].items()}
        self.secrets[body["metadata"]["name"]] = data


def fake_cluster(secrets: dict[str, dict[str, bytes]]) -> tuple[Cluster, FakeCore]:
    cluster = Cluster.__new__(Cluster)
    core = FakeCore(secrets)
    cluster.core = core  # type: ignore[assignment]
    return cluster, core


def pool_with(**auth: Any) -> InferencePool:
    return make_pool("floor", namespace="edge", auth=auth)


def test_cluster_reads_the_control_token_and_tls_secrets_into_credentials() -> None:
    cluster, _ = fake_cluster(
        {
            "hatswarm-control-floor": {"token": b"ctl\n"},
            "tok": {"token": b"s3cret\n"},  # clients' tokens: never what the operator presents
            "tls": {"tls.crt": b"CERT", "tls.key": b"KEY", "ca.crt": b"CA"},
        }
    )
    p = pool_with(tokenSecretRef={"name": "tok"}, tlsSecretRef={"name": "tls"}, mutualTls=True)
    creds = run(cluster.agent_credentials(p))
    assert creds == AgentCredentials("ctl", True, b"CA", b"CERT", b"KEY")
    server_only = pool_with(tlsSecretRef={"name": "tls"})
    assert run(cluster.agent_credentials(server_only)) == AgentCredentials(
        "ctl", tls=True, ca_pem=b"CA"
    )
    bare, _ = fake_cluster({})
    with pytest.raises(LookupError, match="hatswarm-control-floor: 404"):
        run(bare.agent_credentials(pool_with()))


def test_pool_daemon_generates_refreshes_and_rotates_the_control_token() -> None:
    now = [100.0]
    cluster, core = fake_cluster({})
    client = AgentClient()
    refresh = handlers.CredentialsRefresh(client, clock=lambda: now[0])
    p = pool_with()
    owner = {
        "apiVersion": "hatswarm.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "floor", "namespace": "edge", "uid": "u-1"},
    }

    assert run(refresh(cluster, "edge", p, cluster, owner)) == ""
    made = {c["metadata"]["name"]: c for c in core.created}
    assert set(made) == {"hatswarm-control-floor", "hatswarm-clients-floor"}
    for secret in made.values():  # owned by the pool: they go with it
        assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    first = client.credentials.token
    assert len(first) >= 40 and first != core.secrets["hatswarm-clients-floor"]["token"].strip()
    reads = core.reads
    assert (
        run(refresh(cluster, "edge", p, cluster, owner)) == ""
    )  # within the refresh interval: cached
    assert core.reads == reads and len(core.created) == 2

    # Rotation: the Secret is deleted; the next refresh makes a new token and presents it.
    del core.secrets["hatswarm-control-floor"]
    now[0] += handlers.CREDENTIALS_REFRESH_S
    assert run(refresh(cluster, "edge", p, cluster, owner)) == ""
    assert client.credentials.token not in ("", first) and len(core.created) == 3

    # An admin's own value is never overwritten.
    core.secrets["hatswarm-control-floor"] = {"token": b"admin-chosen\n"}
    now[0] += handlers.CREDENTIALS_REFRESH_S
    run(refresh(cluster, "edge", p, cluster, owner))
    assert client.credentials.token == "admin-chosen" and len(core.created) == 3

    # Without the owner (cannot create): a missing Secret is reported once, the last good
    # token stays.
    del core.secrets["hatswarm-control-floor"]
    now[0] += handlers.CREDENTIALS_REFRESH_S
    problem = run(refresh(cluster, "edge", p))
    assert "hatswarm-control-floor" in problem and "404" in problem
    assert client.credentials.token == "admin-chosen"
    now[0] += handlers.CREDENTIALS_REFRESH_S
    assert run(refresh(cluster, "edge", p)) == ""  # reported once

    # A pool that names its clients' tokens, or serves anyone, gets only the control Secret.
    for auth in ({"tokenSecretRef": {"name": "tok"}}, {"unauthenticatedInference": True}):
        c2, core2 = fake_cluster({})
        run(handlers.CredentialsRefresh(AgentClient())(c2, "edge", pool_with(**auth), c2, owner))
        assert [c["metadata"]["name"] for c in core2.created] == ["hatswarm-control-floor"]


# --- local mode and the CLI --------------------------------------------------------------------


def test_local_mode_generates_private_tokens_and_reads_a_named_one(tmp_path: Path) -> None:
    p = pool_with(tokenSecretRef={"name": "floor-token", "key": "pool"})
    with pytest.raises(FileNotFoundError, match="secrets/floor-token/pool"):
        local_auth_args(p, tmp_path)
    token = tmp_path / "secrets" / "floor-token" / "pool"
    token.parent.mkdir(parents=True)
    token.write_text("s3cret\n")
    control = tmp_path / "secrets" / "hatswarm-control-floor" / "token"
    args = local_auth_args(p, tmp_path)
    assert args[:4] == [
        "--control-token-file", str(control.resolve()),
        "--auth-token-file", str(token.resolve()),
    ]  # fmt: skip
    assert oct(control.stat().st_mode & 0o777) == "0o600"
    assert oct(control.parent.stat().st_mode & 0o777) == "0o700"
    ctl = control.read_text().strip()
    assert local_credentials(p, tmp_path) == AgentCredentials(token=ctl)
    assert local_auth_args(p, tmp_path)[1] == str(control.resolve())  # never regenerated
    assert control.read_text().strip() == ctl

    # The default pool: a generated clients' token, distinct from the control token.
    args = local_auth_args(pool_with(), tmp_path)
    clients = tmp_path / "secrets" / "hatswarm-clients-floor" / "token"
    assert args[args.index("--auth-token-file") + 1] == str(clients.resolve())
    assert clients.read_text().strip() not in ("", ctl)
    # Serving anyone is the pool's explicit choice; control keeps its token.
    open_args = local_auth_args(pool_with(unauthenticatedInference=True), tmp_path)
    assert "--auth-token-file" not in open_args and "--control-token-file" in open_args


def test_local_mode_tls_files(tmp_path: Path) -> None:
    folder = tmp_path / "secrets" / "floor-tls"
    folder.mkdir(parents=True)
    for name, body in (("tls.crt", b"CERT"), ("tls.key", b"KEY"), ("ca.crt", b"CA")):
        (folder / name).write_bytes(body)
    p = pool_with(tlsSecretRef={"name": "floor-tls"}, mutualTls=True)
    args = local_auth_args(p, tmp_path)
    assert args[args.index("--tls-ca") + 1] == str((folder / "ca.crt").resolve())
    token = (tmp_path / "secrets" / "hatswarm-control-floor" / "token").read_text().strip()
    assert local_credentials(p, tmp_path) == AgentCredentials(token, True, b"CA", b"CERT", b"KEY")


def test_priority_auto_draws_a_random_priority_and_integers_still_work() -> None:
    parser = build_parser()
    assert parser.parse_args(["--priority", "7"]).priority == 7
    assert parser.parse_args([]).priority == 0
    drawn = {parser.parse_args(["--priority", "auto"]).priority for _ in range(20)}
    assert len(drawn) > 1 and all(1 <= d <= 2**31 - 1 for d in drawn)
    with pytest.raises(SystemExit):
        parser.parse_args(["--priority", "high"])
