"""Tiered answers: an edge answer the route's confidence rule finds unsure goes to a bigger tier.

The bigger tier is a bigger model in the pool (dispatched like any request) or the cloud
fallback (within the deadline and the cloud's share); `hatswarm.tier` says which tier
answered. The judgement of "unsure" is cascade.py's; this is the sending.
"""

from __future__ import annotations

import logging
import random
import time

from hatswarm_agent.protocol import params
from hatswarm_agent.protocol.v1 import grpc_predict_v2_pb2 as pb
from hatswarm_agent.protocol.wire import ADAPTER_PARAM, ROUTE_CLOUD, TIER_CLOUD, TIER_EDGE
from hatswarm_agent.routing import cascade
from hatswarm_agent.routing.attempts import Attempts
from hatswarm_agent.routing.cloud import CloudTarget
from hatswarm_agent.routing.forwarding import Forwarder
from hatswarm_agent.routing.policy import CompiledTable, Escalation, pick_version
from hatswarm_agent.serving.errors import AgentError
from hatswarm_agent.serving.metrics import RouteMetrics

log = logging.getLogger(__name__)


class Escalator:
    """Sends unsure answers' requests on to the bigger tier a route names."""

    def __init__(
        self,
        attempts: Attempts,
        forwarder: Forwarder,
        cloud: CloudTarget,
        metrics: RouteMetrics,
        rng: random.Random,
    ) -> None:
        self.attempts = attempts
        self.forwarder = forwarder
        self.cloud = cloud
        self.metrics = metrics
        self.rng = rng

    async def escalate(
        self,
        request: pb.ModelInferRequest,
        response: pb.ModelInferResponse,
        rule: Escalation,
        compiled: CompiledTable,
        deadline: float,
    ) -> pb.ModelInferResponse:
        """The bigger tier's answer to an unsure edge answer's request, else the edge answer.

        The edge answer stands when it is sure enough, when no time is left, when the cloud is
        at its share limit, or when the bigger tier fails (logged): a cascade never turns an
        answer into an error.
        """
        model = request.model_name
        if params.route_of(response) == ROUTE_CLOUD:  # the pool could not serve it
            return cascade.set_tier(response, TIER_CLOUD)
        edge = cascade.set_tier(response, TIER_EDGE)
        if not cascade.unsure(response, rule.output, rule.threshold):
            return edge
        if time.monotonic() >= deadline:
            return edge
        try:
            if rule.cloud:
                if not self.cloud.allow():
                    return edge
                self.metrics.escalations.labels(model, "cloud").inc()
                answer = await self.forwarder.to_cloud(request, deadline)
                return cascade.set_tier(answer, TIER_CLOUD)
            bigger = pb.ModelInferRequest()
            bigger.CopyFrom(request)
            bigger.model_name, bigger.model_version = rule.model, ""
            bigger.parameters.pop(ADAPTER_PARAM, None)  # the adapter belongs to the small model
            routes = compiled.routes(rule.model)
            route = pick_version(routes, self.rng) if routes else None
            if route is not None and route.version:
                bigger.model_version = route.version
            self.metrics.escalations.labels(model, rule.model).inc()
            answer = await self.attempts.run(bigger, route, compiled, deadline)
        except AgentError as exc:
            log.info("escalation of model '%s' failed, the edge answer stands: %s", model, exc)
            return edge
        tier = (
            TIER_CLOUD
            if params.route_of(answer) == ROUTE_CLOUD
            else cascade.tier_of_model(rule.model)
        )
        return cascade.set_tier(answer, tier)
