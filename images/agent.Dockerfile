# syntax=docker/dockerfile:1
# hatswarm node agent: OIP gRPC server + router, onnxruntime / simulated NPU backends (the HailoRT
# variant is agent-hailo.Dockerfile). linux/arm64 (Raspberry Pi 5) and linux/amd64 (kind, CI):
#   images/build.sh --engine buildx [--platform linux/arm64,linux/amd64] [--push]
# which prepares the context (the wheels, requirements exported from uv.lock with hashes, and
# images/install.py). No QEMU needed: the install stage runs on the build platform and fetches the
# target's wheels (pip --platform, --only-binary); the final stage has no RUN. No kopf and no
# Kubernetes client: the agent knows nothing of Kubernetes (install.py checks the tree).
#
# Base image: pinned by tag here; pin it by digest at release time with
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest of the multi-arch index>
# (`docker buildx imagetools inspect python:3.11-slim-bookworm` prints it). Without a registry,
# images/build.sh's default rootfs engine builds the same image from Debian's packages instead.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS install
ARG TARGETARCH
# PIP_NO_INDEX=1 (images/build.sh --wheelhouse): every wheel comes from the context, no network.
ARG PIP_NO_INDEX=0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=${PIP_NO_INDEX}
COPY install.py agent-requirements.txt /tmp/context/
COPY wheels/ /tmp/context/wheels/
# The import check runs only when the build and target platforms are the same.
RUN python3 /tmp/context/install.py agent "${TARGETARCH}" /opt/hatswarm \
      --python /usr/local/bin/python3.11 --context /tmp/context \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/hatswarm --no-create-home \
      --shell /usr/sbin/nologin hatswarm \
 && install -d -m 0750 /var/lib/hatswarm

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
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
      org.opencontainers.image.url="https://github.com/hatswarm/hatswarm" \
      org.opencontainers.image.documentation="https://github.com/hatswarm/hatswarm/blob/main/images/README.md" \
      org.opencontainers.image.vendor="hatswarm" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# passwd/group of the same Debian base, plus the hatswarm user (no RUN on the target platform)
COPY --from=install /etc/passwd /etc/group /etc/
COPY --from=install --chown=10001:10001 /var/lib/hatswarm /var/lib/hatswarm
COPY --from=install /opt/hatswarm /opt/hatswarm
ENV PATH=/opt/hatswarm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HATSWARM_HEALTH_ADDR=127.0.0.1:8001
USER 10001:10001
WORKDIR /var/lib/hatswarm
EXPOSE 8001 9090
# gRPC health (grpc.health.v1) of the agent itself; Kubernetes ignores HEALTHCHECK and uses the
# chart's grpc probes. Kept in Docker-format images (OCI image configs have no such field).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os,sys,grpc;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;ch=grpc.insecure_channel(os.environ['HATSWARM_HEALTH_ADDR']);sys.exit(g.HealthStub(ch).Check(h.HealthCheckRequest(),timeout=3).status!=h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["hatswarm-agent"]
CMD ["--host", "0.0.0.0", "--port", "8001", "--metrics-port", "9090", "--state-dir", "/var/lib/hatswarm"]
