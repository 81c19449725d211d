# syntax=docker/dockerfile:1
# hatswarm operator: kopf + the Kubernetes client + the pure control loop. It talks to agents
# only through the generated gRPC stubs, so the agent package is installed WITHOUT its
# dependencies and onnxruntime is pruned from the exported requirements (checked at build).
# Build with images/build.sh (it exports the requirements from uv.lock with hashes and builds
# the wheels). Base image: see agent.Dockerfile (pinned by tag; pin by digest at release).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS install
# PIP_NO_INDEX=1 (images/build.sh --wheelhouse): every wheel comes from the context, no network.
ARG PIP_NO_INDEX=0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    PIP_FIND_LINKS=/tmp/wheels PIP_NO_INDEX=${PIP_NO_INDEX}
COPY operator-requirements.txt /tmp/requirements.txt
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/hatswarm \
 && /opt/hatswarm/bin/pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt \
 && /opt/hatswarm/bin/pip install --no-cache-dir --no-deps \
      /tmp/wheels/hatswarm_agent-*.whl /tmp/wheels/hatswarm_operator-*.whl \
 && /opt/hatswarm/bin/python -c "import hatswarm_operator.kube.main, hatswarm_agent.protocol.v1.control_pb2_grpc" \
 && if /opt/hatswarm/bin/python -c "import onnxruntime" 2>/dev/null; then exit 1; fi \
 && find /opt/hatswarm -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/hatswarm/bin/pip* /opt/hatswarm/lib/python3*/site-packages/pip

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="hatswarm-operator" \
      org.opencontainers.image.description="hatswarm operator: EdgeModel and InferencePool on k3s, placement, failover, rollout and cost" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/hatswarm/hatswarm" \
      org.opencontainers.image.vendor="hatswarm" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
RUN groupadd --system --gid 10001 hatswarm \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin hatswarm
COPY --from=install /opt/hatswarm /opt/hatswarm
ENV PATH=/opt/hatswarm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080 9100
# kopf's liveness endpoint (the chart's livenessProbe uses the same URL).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import urllib.request;urllib.request.urlopen('http://127.0.0.1:8080/healthz',timeout=3)"]
ENTRYPOINT ["hatswarm-operator"]
CMD ["--all-namespaces"]
