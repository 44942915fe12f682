# syntax=docker/dockerfile:1
# The liberator-cdc connector image.
#
#   docker build -t liberator-cdc .
#   make image     # the same with podman and a local Debian base where no Docker engine or
#                  # registry is available (scripts/container/image.sh)
#   docker run --rm -v "$PWD/configs/compose:/etc/cdc:ro" -p 127.0.0.1:8080:8080 \
#     -e CDC_SOURCE_URL=... -e KAFKA_BOOTSTRAP=... -e SCHEMA_REGISTRY_URL=... liberator-cdc
#
# Configuration: mount a directory holding connector.yaml (and the .avsc files it names,
# relative to it) at /etc/cdc, read-only. No VOLUME is declared for it, so an unmounted
# /etc/cdc fails loudly ("cannot read the file") instead of running an empty anonymous volume.
# Any other config: docker run ... liberator-cdc run /etc/cdc/other.yaml (or validate, check, ...).
# Secrets (DSN passwords, SASL credentials) come in at run time through the environment
# variables the config references (${VAR}), never baked into the image.
#
# Health: the config must set runtime.http_port (8080 in configs/compose; any port works) and
# http_host: 0.0.0.0 to publish it. The connector writes its /healthz URL to $CDC_HEALTH_FILE
# when it starts serving, and the HEALTHCHECK below (`cdc health`) asks that URL, so the check
# follows the config's port. /readyz and /metrics are served on the same port. With a read-only
# root filesystem, mount a tmpfs at /tmp (where the URL is written).
#
# Shutdown: ENTRYPOINT is exec form, so `cdc` is PID 1 and receives SIGTERM from `docker stop`
# directly (flush, commit, exit 0). Give it more than runtime.shutdown_timeout to do so
# (docker stop -t / compose stop_grace_period).

ARG PYTHON_BUILDER_IMAGE=python:3.11-slim-bookworm
ARG PYTHON_RUNTIME_IMAGE=python:3.11-slim-bookworm

# --- builder: the project's wheel and wheels of all its dependencies ----------------------
# Same Debian release as the runtime, so that any wheel pip has to build here links against
# the runtime's glibc. All current dependencies ship manylinux wheels or are pure Python.
FROM ${PYTHON_BUILDER_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The C accelerators (setup.py) need a C compiler and Python's headers, here only: the runtime
# stage installs the built wheel. (The official python image has the headers; a Debian base
# gets them from python3-dev.)
RUN if ! command -v gcc >/dev/null; then \
      headers=$(python3 -c 'import os, sysconfig; print("" if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else "python3-dev")') \
      && apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev $headers \
      && rm -rf /var/lib/apt/lists/*; \
    fi
# Everything the build backend needs; .dockerignore keeps venvs, caches and outputs out.
COPY . .
# The versions CI tested (constraints.txt), not whatever is newest today.
RUN pip wheel -c constraints.txt --wheel-dir /wheels .

# --- runtime: no compilers, no build tools, no source tree --------------------------------
FROM ${PYTHON_RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="liberator-cdc" \
      org.opencontainers.image.description="Change-data-capture connectors: legacy databases to keyed, Avro-schematized Kafka streams" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CDC_LOG_FORMAT=json \
    CDC_LOG_STREAM=stdout

# Install from the builder's wheels only (--no-index: nothing is fetched or compiled here);
# the bind mount keeps the wheels out of the image's layers. Then prove the entry point and
# the connector plugins load (the same check as `make smoke`).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels liberator-cdc \
    && cdc --help >/dev/null \
    && cdc connectors list \
    && python3 -c "import cdc._avroread, cdc._avrowrite"

# An unprivileged user with a fixed uid/gid (10001) for volume ownership and runAsUser policies.
RUN groupadd --system --gid 10001 cdc \
    && useradd --system --uid 10001 --gid cdc --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin cdc \
    && mkdir -p /app /etc/cdc \
    && chown cdc:cdc /app

WORKDIR /app
USER 10001:10001

# Health and metrics endpoint (runtime.http_port in the config).
EXPOSE 8080

# Slim images have no curl: `cdc health` asks the announced /healthz in Python. No endpoint,
# an error or a non-200 answer (503 = dead) fails.
ENV CDC_HEALTH_FILE=/tmp/cdc-health-url
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["cdc", "health", "--timeout", "4"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["cdc"]
CMD ["run", "/etc/cdc/connector.yaml"]
