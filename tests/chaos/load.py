"""Closed-loop load for the chaos scenarios: real gRPC clients on hatswarm's own OIP stubs.

`ClosedLoop(address, make_request, clients=8)` runs `clients` threads, each sending its next
request when the last one ended (after `think_s`), until `finish()` is called and at least
`minimum` were sent. Every request has a client deadline (`deadline_s`, far above any pool's
budget) so a hang shows up as a long DEADLINE_EXCEEDED outcome instead of hanging the test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2_grpc as pb_grpc
from hatswarm_agent.protocol.wire import NODE_PARAM


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (monotonic), how long it took, its status, who answered."""

    started: float
    seconds: float
    code: str  # "OK" or the status code's name
    detail: str = ""
    node: str = ""


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.code != "OK"]

    @property
    def nodes(self) -> Counter[str]:
        return Counter(o.node for o in self.outcomes if o.code == "OK")

    def errors(self, limit: int = 5) -> list[str]:
        return [f"{o.code}: {o.detail[:200]}" for o in self.failed[:limit]]

    def max_seconds(self, since: float = 0.0, until: float = float("inf")) -> float:
        return max((o.seconds for o in self.outcomes if since <= o.started < until), default=0.0)

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(o.seconds for o in self.outcomes)
        if not ordered:
            return 0.0
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class ClosedLoop:
    """`clients` threads of one-request-after-the-other load against one agent."""

    def __init__(
        self,
        address: str,
        make_request: Callable[[int], pb.ModelInferRequest],
        *,
        clients: int = 8,
        minimum: int = 0,
        think_s: float = 0.0,
        deadline_s: float = 30.0,
        token: str = "",
    ) -> None:
        """`token`: the pool's inference token, when it has one (sent as a bearer token)."""
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.address = address
        self.make_request = make_request
        self.clients = clients
        self.minimum = minimum
        self.think_s = think_s
        self.deadline_s = deadline_s
        self.summary = Summary()
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def start(self) -> ClosedLoop:
        for t in self._threads:
            t.start()
        return self

    @property
    def sent(self) -> int:
        with self._lock:
            return self._next

    def wait_sent(self, count: int, within: float = 60.0) -> bool:
        deadline = time.monotonic() + within
        while self.sent < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def finish(self, within: float = 120.0) -> Summary:
        """Stop once `minimum` requests were sent; wait for the ones in flight."""
        self._stop.set()
        deadline = time.monotonic() + within
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        return self.summary

    def _client(self) -> None:
        channel = grpc.insecure_channel(self.address)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            while True:
                with self._lock:
                    if self._stop.is_set() and self._next >= self.minimum:
                        return
                    i = self._next
                    self._next += 1
                request = self.make_request(i)
                start = time.monotonic()
                try:
                    response = stub.ModelInfer(
                        request, timeout=self.deadline_s, metadata=self.metadata
                    )
                except grpc.RpcError as err:
                    outcome = Outcome(
                        start, time.monotonic() - start, err.code().name, err.details() or ""
                    )
                else:
                    p = response.parameters
                    node = p[NODE_PARAM].string_param if NODE_PARAM in p else ""
                    outcome = Outcome(start, time.monotonic() - start, "OK", node=node)
                with self._lock:
                    self.summary.outcomes.append(outcome)
                if self.think_s:
                    time.sleep(self.think_s)
        finally:
            channel.close()
