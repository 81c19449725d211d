# syntax=docker/dockerfile:1
# hatswarm operator: kopf + the Kubernetes client + the pure control loop. It talks to agents
# only through the generated gRPC stubs, so the agent package goes in WITHOUT its dependencies and
# onnxruntime is pruned from the exported requirements (install.py checks the tree).
# linux/arm64 and linux/amd64, built like agent.Dockerfile (see there: no QEMU needed, base image
# pinned by tag, by digest at release):
#   images/build.sh --engine buildx [--platform linux/arm64,linux/amd64] [--push]
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS install
ARG TARGETARCH
# PIP_NO_INDEX=1 (images/build.sh --wheelhouse): every wheel comes from the context, no network.
ARG PIP_NO_INDEX=0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=${PIP_NO_INDEX}
COPY install.py operator-requirements.txt /tmp/context/
COPY wheels/ /tmp/context/wheels/
# The import check runs only when the build and target platforms are the same.
RUN python3 /tmp/context/install.py operator "${TARGETARCH}" /opt/hatswarm \
      --python /usr/local/bin/python3.11 --context /tmp/context \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin hatswarm

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
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
      org.opencontainers.image.url="https://github.com/hatswarm/hatswarm" \
      org.opencontainers.image.documentation="https://github.com/hatswarm/hatswarm/blob/main/images/README.md" \
      org.opencontainers.image.vendor="hatswarm" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# passwd/group of the same Debian base, plus the hatswarm user (no RUN on the target platform)
COPY --from=install /etc/passwd /etc/group /etc/
COPY --from=install /opt/hatswarm /opt/hatswarm
ENV PATH=/opt/hatswarm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /
EXPOSE 8080 9100
# kopf's liveness endpoint (the chart's livenessProbe uses the same URL). Kept in Docker-format
# images (OCI image configs have no HEALTHCHECK); Kubernetes uses the chart's probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import urllib.request;urllib.request.urlopen('http://127.0.0.1:8080/healthz',timeout=3)"]
ENTRYPOINT ["hatswarm-operator"]
CMD ["--all-namespaces"]
