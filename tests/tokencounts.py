"""The tokens a real agent counted, read as a client of it would: from its /metrics
(`hatswarm_tokens_total`) and from NodeStatus, both keyed by (model, kind, where)."""

from __future__ import annotations

import grpc
import httpx
from hatswarm_agent.protocol.v1 import control_pb2, control_pb2_grpc

from tests.agentproc import AgentProcess

Key = tuple[str, str, str]  # (model, kind: prompt | completion, where: edge | cloud)


def tokens_metric(port: int) -> dict[Key, float]:
    """hatswarm_tokens_total by (model, kind, where), scraped from the agent's /metrics."""
    out: dict[Key, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith("hatswarm_tokens_total{"):
            labels = dict(
                part.split("=", 1)
                for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            model, kind, where = (labels[k].strip('"') for k in ("model", "kind", "where"))
            out[(model, kind, where)] = float(line.split()[-1])
    return out


def node_tokens(agent: AgentProcess) -> dict[Key, int]:
    """The same counts as NodeStatus reports them (what the operator's status sums)."""
    with grpc.insecure_channel(agent.address) as channel:
        status = control_pb2_grpc.AgentControlStub(channel).NodeStatus(
            control_pb2.NodeStatusRequest(), timeout=10
        )
    return {(t.model, t.kind, t.where): t.tokens for t in status.tokens}
