# syntax=docker/dockerfile:1
# agent-staking container image.
#
#   docker build -t agent-staking:0.1.0 .
#   docker run --rm -p 50051:50051 -p 50052:50052 -p 9464:9464 agent-staking:0.1.0
#
# Ports: 50051 gRPC, 50052 health (grpc.health.v1 only, always plaintext: what probes
# ask), 9464 /metrics. Without TLS, gRPC and /metrics are plaintext (the server warns
# that they listen beyond loopback): publish them only to networks you trust. With
# TLS, mount the certificate files read-only (a directory, so replaced files are
# seen; the server re-reads them without a restart) and point the server at them;
# gRPC and /metrics are then both served over TLS:
#
#   docker run --rm -p 50051:50051 -p 50052:50052 -p 9464:9464 \
#     -v "$PWD/tls:/etc/agent-staking/tls:ro" \
#     -e AGENT_STAKING_TLS_CERT_FILE=/etc/agent-staking/tls/tls.crt \
#     -e AGENT_STAKING_TLS_KEY_FILE=/etc/agent-staking/tls/tls.key \
#     agent-staking:0.1.0
#   grpcurl -cacert tls/ca.crt localhost:50051 list
#
# (add -e AGENT_STAKING_TLS_CLIENT_CA_FILE=/etc/agent-staking/tls/ca.crt for mutual
# TLS). The files must be readable by uid 10001, and the certificate must name the
# host clients dial.
#
# Stage 1 builds the wheels (ours and every dependency); stage 2 installs them into
# a slim runtime image without pip, setuptools or compilers, and runs as a non-root
# user. tests/deploy/test_dockerfile.py parses this file and replays what it does
# (copy, build the wheel, install it into a fresh virtualenv, serve, health check).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore as well).
COPY pyproject.toml README.md ./
COPY gen/ gen/
COPY service/ service/
# Our wheel first, then every dependency as a wheel (all have binary wheels for
# CPython 3.11 on manylinux; nothing is compiled).
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip wheel --wheel-dir /wheels /wheels/agent_staking-*.whl

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENT_STAKING_LISTEN=0.0.0.0:50051 \
    AGENT_STAKING_HEALTH_LISTEN=0.0.0.0:50052 \
    AGENT_STAKING_METRICS_LISTEN=0.0.0.0:9464 \
    AGENT_STAKING_DATA_DIR=/data
# Installed offline from the build stage's wheels (bind-mounted: no wheel stays in a
# layer), then the installers leave: the final image holds no build tooling.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --disable-pip-version-check /wheels/*.whl \
    && pip uninstall --yes --disable-pip-version-check setuptools wheel pip \
    && groupadd --system --gid 10001 agent-staking \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin agent-staking \
    && mkdir -p /data \
    && chown 10001:10001 /data
# State of the embedded default (SQLite key store, relay state file). Kubernetes
# mounts an emptyDir here (the root filesystem is read-only there).
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
# gRPC, health (plaintext, for probes), Prometheus metrics.
EXPOSE 50051 50052 9464
# Exec form: the server is PID 1 and gets SIGTERM itself (health NOT_SERVING, then
# AGENT_STAKING_SHUTDOWN_GRACE_SECONDS for calls in flight, then exit 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["agent-staking", "serve"]
