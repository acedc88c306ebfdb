# The operator SDK base image: what every operator image starts FROM (`ARG SDK`). It holds
# the SDK (sdk/, the jip-sdk distribution: pydicom, highdicom, SimpleITK, numpy,
# jsonschema) in /opt/venv, the unprivileged `operator` user (uid 10001) and the
# environment runners expect; never the platform, pip or a compiler. `make images` builds
# it first (deploy/images.py); by hand, from the repository root:
#   podman build --format docker -f deploy/operator-sdk.Dockerfile -t jip/operator-sdk:0.1.0 .
# BASE is any Debian-like image with python3 and its venv module: the mmdebstrap-made
# jip/base here, python:3.11-slim at a site with a registry.
ARG BASE=localhost/jip/base:bookworm

# --- build: the SDK alone into /opt/venv, with uv ---------------------------------------
FROM ${BASE} AS build
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/tools && /opt/tools/bin/pip install --quiet "uv>=0.5,<1"
ENV UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never UV_NATIVE_TLS=1
COPY sdk /src/sdk
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/tools/bin/uv venv --quiet --python python3 /opt/venv \
    && /opt/tools/bin/uv pip install --quiet --python /opt/venv/bin/python /src/sdk

# --- final: the venv and the operator user; no pip, no uv, no compiler ------------------
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH HOME=/tmp
RUN echo 'operator:x:10001:10001::/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'operator:x:10001:' >> /etc/group
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/operator
# Runners set JIP_INPUT_DIR, JIP_OUTPUT_DIR and JIP_PARAMS and never run it as root.
USER 10001:10001
LABEL org.opencontainers.image.title="jip/operator-sdk" \
      org.opencontainers.image.description="JIP operator SDK base: FROM it, COPY main.py"
