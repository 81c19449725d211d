"""The Kubernetes adapter: kopf handlers, cluster reads and writes, status sink."""
