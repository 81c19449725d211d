# syntax=docker/dockerfile:1
# hatswarm node agent: OIP gRPC server + router, onnxruntime / simulated NPU / HailoRT backends.
# linux/arm64 (Raspberry Pi 5) and linux/amd64 (kind, CI). Build with images/build.sh, which
# prepares the context (the agent wheel + requirements exported from uv.lock with hashes).
# No kopf, no Kubernetes client: the agent knows nothing of Kubernetes (checked at build).
#
# Base image: pinned by tag here; pin by digest at release time with
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# (resolve it with `docker buildx imagetools inspect python:3.11-slim-bookworm`). Offline,
# images/build.sh --local-base builds an equivalent Debian bookworm + python3.11 base with
# debootstrap and passes it here.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS install
# PIP_NO_INDEX=1 (images/build.sh --wheelhouse): every wheel comes from the context, no network.
ARG PIP_NO_INDEX=0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    PIP_FIND_LINKS=/tmp/wheels PIP_NO_INDEX=${PIP_NO_INDEX}
COPY agent-requirements.txt /tmp/requirements.txt
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/hatswarm \
 && /opt/hatswarm/bin/pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt \
 && /opt/hatswarm/bin/pip install --no-cache-dir --no-deps /tmp/wheels/hatswarm_agent-*.whl \
 && /opt/hatswarm/bin/python -c "import hatswarm_agent.cli, onnxruntime" \
 && if /opt/hatswarm/bin/python -c "import kopf" 2>/dev/null; then exit 1; fi \
 && if /opt/hatswarm/bin/python -c "import kubernetes" 2>/dev/null; then exit 1; fi \
 && find /opt/hatswarm -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/hatswarm/bin/pip* /opt/hatswarm/lib/python3*/site-packages/pip

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="hatswarm-agent" \
      org.opencontainers.image.description="hatswarm node agent: Open Inference Protocol gRPC for Raspberry Pi 5 + AI HAT+ (Hailo), onnxruntime and a simulated NPU" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/hatswarm/hatswarm" \
      org.opencontainers.image.vendor="hatswarm" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
RUN groupadd --system --gid 10001 hatswarm \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/hatswarm --no-create-home \
      --shell /usr/sbin/nologin hatswarm \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/hatswarm
COPY --from=install /opt/hatswarm /opt/hatswarm
ENV PATH=/opt/hatswarm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HATSWARM_HEALTH_ADDR=127.0.0.1:8001
USER 10001:10001
WORKDIR /var/lib/hatswarm
EXPOSE 8001 9090
# gRPC health (grpc.health.v1) of the agent itself; Kubernetes uses its own grpc probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os,sys,grpc;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;ch=grpc.insecure_channel(os.environ['HATSWARM_HEALTH_ADDR']);sys.exit(g.HealthStub(ch).Check(h.HealthCheckRequest(),timeout=3).status!=h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["hatswarm-agent"]
CMD ["--host", "0.0.0.0", "--port", "8001", "--metrics-port", "9090", "--state-dir", "/var/lib/hatswarm"]
