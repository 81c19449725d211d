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
# grpc.health.v1 service an agent reports SERVING for as soon as it runs (Kubernetes' startup
# and liveness probes ask it); the overall service "" waits until the agent can route.
LIVENESS_SERVICE = "hatswarm.liveness"

# The OIP method agents forward to each other and to the cloud fallback.
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
# Triton's streaming method: generations travel on it between agents, as clients use it.
STREAM_INFER_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"

# Request parameters hatswarm reads (protocol/params.py reads them).
ADAPTER_PARAM = "adapter"  # string: the LoRA adapter to run with
PRIORITY_PARAM = "priority"  # int (or a string of one): higher sheds last

# Response parameters: which node answered, by which route, and for tiered models which tier.
NODE_PARAM = "hatswarm.node"
ROUTE_PARAM = "hatswarm.route"
TIER_PARAM = "hatswarm.tier"
# A hop's answer carries the serving node's queue depth (the forwarder removes it).
DEPTH_PARAM = "hatswarm.queue_depth"
# ...and for a generation, its sequence slots and the share of its KV cache budget in use.
SLOTS_PARAM = "hatswarm.sequence_slots"
KV_USE_PARAM = "hatswarm.kv_cache_use"

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

# -- generation over ModelStreamInfer: Triton's vLLM backend's names, so its clients work -------

TEXT_INPUT = "text_input"  # BYTES [1]: the prompt
STREAM_INPUT = "stream"  # BOOL [1]: one response per piece (true) or one for the whole text
SAMPLING_INPUT = "sampling_parameters"  # BYTES [1]: a JSON object (max_tokens, temperature, ...)
EXCLUDE_INPUT = "exclude_input_in_output"  # BOOL [1]: default true when streaming, else false
TEXT_OUTPUT = "text_output"  # BYTES [1]: a piece of text (or, not streaming, the whole text)
# Response parameter Triton sets on every streamed response: true on a request's last one.
FINAL_PARAM = "triton_final_response"
# Request parameter tritonclient sets: the last response may carry no outputs at all.
EMPTY_FINAL_PARAM = "triton_enable_empty_final_response"
# hatswarm's additions, which an agent forwarding a generation to a peer relies on:
MESSAGES_PARAM = "hatswarm.messages"  # request, string: chat messages as JSON (no text_input)
TOKENS_PARAM = "hatswarm.tokens"  # response, int: tokens this piece completes
FINISH_PARAM = "hatswarm.finish_reason"  # final response, string: "stop" or "length"
PROMPT_TOKENS_PARAM = "hatswarm.prompt_tokens"  # final response, int
COMPLETION_TOKENS_PARAM = "hatswarm.completion_tokens"  # final response, int
# Final response, when the node measured its runtime's own time (backends' Timings): the
# runtime's seconds to the first piece and after it, and the tokens after it.
PROMPT_SECONDS_PARAM = "hatswarm.runtime_prompt_s"  # double
DECODE_SECONDS_PARAM = "hatswarm.runtime_decode_s"  # double
DECODE_TOKENS_PARAM = "hatswarm.runtime_decode_tokens"  # int
CODE_PARAM = "hatswarm.code"  # error response, string: the gRPC status code's name
SESSION_PARAM = "hatswarm.session"  # request, string: a conversation's id (routing affinity)
# HTTP: the header naming a conversation (OpenAI's body field `user` is read when it is absent).
SESSION_HEADER = "X-Session-Id"
