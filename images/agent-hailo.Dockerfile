# syntax=docker/dockerfile:1
# hatswarm node agent WITH HailoRT, for Raspberry Pi 5 + AI HAT+ (Hailo-8L, Hailo-8) or AI HAT+ 2
# (Hailo-10H). linux/arm64 only. UNVERIFIED: written and linted, never built, because Raspberry
# Pi's apt repository could not be reached where it was written (images/README.md says what ran
# where). The plain agent image (agent.Dockerfile) has no HailoRT and serves on the CPU.
#
# HailoRT's Python binding (`hailo_platform`) is not on PyPI: it comes from Raspberry Pi's apt
# repository (archive.raspberrypi.com/debian bookworm main), the packages `sudo apt install
# hailo-all` puts on Raspberry Pi OS. User-space HailoRT must be the very version of the node's
# hailo_pci kernel driver (`modinfo -F version hailo_pci` on the Pi), so it is a required build
# argument, and the build fails when apt resolves another:
#   images/build.sh --engine buildx --only agent-hailo --platform linux/arm64 \
#     --build-arg HAILORT_VERSION=4.20.0                         # Hailo-8L / Hailo-8
#   ... --build-arg HAILO_FAMILY=hailo10 --build-arg HAILORT_VERSION=5.1.1   # Hailo-10H
# The final stage runs apt and imports hailo_platform on arm64: build on a Pi (native), or with
# QEMU binfmt (docker/setup-qemu-action) on another machine.
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Raspberry Pi's archive key, accepted only with its published fingerprint.
FROM --platform=$BUILDPLATFORM ${DEBIAN_IMAGE} AS keyring
ARG RPI_KEY_URL=https://archive.raspberrypi.com/debian/raspberrypi.gpg.key
ARG RPI_KEY_FINGERPRINT=CF8A1AF502A2AA2D763BAE7E82B129927FA3303E
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL "${RPI_KEY_URL}" -o /tmp/raspberrypi.asc \
 && gpg --show-keys --with-colons /tmp/raspberrypi.asc | grep -q "^fpr:*${RPI_KEY_FINGERPRINT}:" \
 && gpg --dearmor < /tmp/raspberrypi.asc > /raspberrypi-archive-keyring.gpg \
 && rm -rf /var/lib/apt/lists/*

# The application, cross-installed like agent.Dockerfile's, into a venv that also sees the
# apt-installed hailo_platform (--system-site-packages). HailoRT 4.x's binding is built against
# NumPy 1.x (it requires numpy<2), so numpy is pinned to 1.26.4 here instead of uv.lock's 2.x
# (onnxruntime needs >=1.21.6, the agent >=1.26).
FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS install
ARG TARGETARCH
ARG PIP_NO_INDEX=0
ARG NUMPY_REQUIREMENT="numpy==1.26.4 --hash=sha256:7ab55401287bfec946ced39700c053796e7cc0e3acbef09993a9ad2adba6ca6e"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=${PIP_NO_INDEX}
COPY install.py agent-requirements.txt /tmp/context/
COPY wheels/ /tmp/context/wheels/
RUN test "${TARGETARCH}" = arm64 \
 && python3 /tmp/context/install.py agent arm64 /opt/hatswarm --python /usr/bin/python3.11 \
      --system-site-packages --override "${NUMPY_REQUIREMENT}" --context /tmp/context

FROM ${DEBIAN_IMAGE}
ARG DEBIAN_IMAGE
ARG HAILORT_VERSION
ARG HAILO_FAMILY=hailo8
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="hatswarm-agent-hailo" \
      org.opencontainers.image.description="hatswarm node agent with HailoRT (Raspberry Pi apt) for Raspberry Pi 5 + AI HAT+: Open Inference Protocol gRPC, Hailo HEF and onnxruntime" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/hatswarm/hatswarm" \
      org.opencontainers.image.url="https://github.com/hatswarm/hatswarm" \
      org.opencontainers.image.documentation="https://github.com/hatswarm/hatswarm/blob/main/images/README.md" \
      org.opencontainers.image.vendor="hatswarm" \
      org.opencontainers.image.base.name="${DEBIAN_IMAGE}" \
      io.hatswarm.hailort.version="${HAILORT_VERSION}" \
      io.hatswarm.hailo.family="${HAILO_FAMILY}"
COPY --from=keyring /raspberrypi-archive-keyring.gpg /usr/share/keyrings/
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# HailoRT pinned to the driver's version (apt's "pkg=VERSION*" picks that upstream version, any
# Debian revision); checked again after the install. python3.11 is Debian's, left to follow
# bookworm's security updates (hence DL3008).
# hadolint ignore=DL3008
RUN if [[ -z "${HAILORT_VERSION}" ]]; then \
      echo "HAILORT_VERSION is required: the hailo_pci driver's version on the nodes" \
           "(modinfo -F version hailo_pci)" >&2; exit 1; fi \
 && case "${HAILO_FAMILY}" in \
      hailo8) packages=(hailort python3-hailort) ;; \
      hailo10) packages=(h10-hailort python3-h10-hailort) ;; \
      *) echo "HAILO_FAMILY is hailo8 (Hailo-8L, Hailo-8) or hailo10 (Hailo-10H)" >&2; exit 1 ;; \
    esac \
 && echo "deb [signed-by=/usr/share/keyrings/raspberrypi-archive-keyring.gpg] http://archive.raspberrypi.com/debian/ bookworm main" \
      > /etc/apt/sources.list.d/raspi.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 "${packages[@]/%/=${HAILORT_VERSION}*}" \
 && for p in "${packages[@]}"; do \
      v="$(dpkg-query -W -f='${Version}' "$p")"; \
      [[ "$v" == "${HAILORT_VERSION}"* ]] || { echo "$p is $v, not ${HAILORT_VERSION}" >&2; exit 1; }; \
    done \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/hatswarm --no-create-home \
      --shell /usr/sbin/nologin hatswarm \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/hatswarm
COPY --from=install /opt/hatswarm /opt/hatswarm
# On arm64 (a Pi, or QEMU): the venv sees hailo_platform and runs onnxruntime with numpy 1.26.
RUN /opt/hatswarm/bin/python3 -c "import hailo_platform, onnxruntime, numpy, hatswarm_agent.cli; \
print('hailo_platform', hailo_platform.__version__, 'numpy', numpy.__version__)"
ENV PATH=/opt/hatswarm/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HATSWARM_HEALTH_ADDR=127.0.0.1:8001
USER 10001:10001
# HailoRT writes hailort.log into the working directory: keep it writable.
WORKDIR /var/lib/hatswarm
EXPOSE 8001 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os,sys,grpc;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;ch=grpc.insecure_channel(os.environ['HATSWARM_HEALTH_ADDR']);sys.exit(g.HealthStub(ch).Check(h.HealthCheckRequest(),timeout=3).status!=h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["hatswarm-agent"]
CMD ["--host", "0.0.0.0", "--port", "8001", "--metrics-port", "9090", "--state-dir", "/var/lib/hatswarm"]
