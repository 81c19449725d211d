"""Names on the wire that hatswarm adds to the Open Inference Protocol, shared by both sides.

The agent writes them and reads them; the operator (demo, load test, validation gate) reads
them too. Plain strings, no imports: the operator loads this beside tritonclient, whose OIP
protobufs clash with the agent's in one process.
"""

from __future__ import annotations

# gRPC metadata a forwarding agent (or the gate) sends: "serve this here, never forward it".
HOP_KEY = "x-hatswarm-hop"
HOP_METADATA: tuple[tuple[str, str], ...] = ((HOP_KEY, "1"),)
# Response metadata of ModelReady/ModelMetadata: the node that has (or would serve) the model.
NODE_METADATA_KEY = "x-hatswarm-node"

# The OIP method agents forward to each other and to the cloud fallback.
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"

# Request parameters hatswarm reads (protocol/params.py reads them).
ADAPTER_PARAM = "adapter"  # string: the LoRA adapter to run with
PRIORITY_PARAM = "priority"  # int (or a string of one): higher sheds last

# Response parameters: which node answered, by which route, and for tiered models which tier.
NODE_PARAM = "hatswarm.node"
ROUTE_PARAM = "hatswarm.route"
TIER_PARAM = "hatswarm.tier"
# A hop's answer carries the serving node's queue depth (the forwarder removes it).
DEPTH_PARAM = "hatswarm.queue_depth"

# Values of ROUTE_PARAM (also the `route` label of hatswarm_route_requests).
ROUTE_LOCAL = "local"
ROUTE_PEER = "peer"
ROUTE_CLOUD = "cloud"
ROUTE_CACHE = "cache"
# NODE_PARAM of an answer that did not come from a node of the pool.
NODE_CLOUD = "cloud"
NODE_CACHE = "cache"

# Values of TIER_PARAM; a bigger model in the pool answers as f"{TIER_MODEL_PREFIX}{model}".
TIER_EDGE = "edge"
TIER_CLOUD = "cloud"
TIER_MODEL_PREFIX = "escalated-model:"
