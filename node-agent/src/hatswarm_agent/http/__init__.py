"""The agent's HTTP front doors, on the same event loop as its gRPC server: OpenAI-compatible
(/v1), Ollama (/api) and KServe v2 REST (/v2). Conversion only, like the gRPC servicer: every
request goes to the callables the server wires in (`infer`, `generate`), so the doors share the
data plane, the routing across the pool, auth and metrics with gRPC."""
