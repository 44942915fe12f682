#!/usr/bin/env bash
# Build the connector image from the Dockerfile: with Docker when an engine runs, else with
# podman on the local debootstrap base (scripts/container/base.sh), no registry needed.
# Usage: image.sh [TAG]   (default $CDC_IMAGE); CDC_ENGINE=podman|docker forces the engine
# (make container-test uses podman: its tests drive podman).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tag="${1:-$CDC_IMAGE}"
started=$(date +%s)

engine="${CDC_ENGINE:-auto}"
if [[ "$engine" == auto ]]; then
  if has_docker; then engine=docker; else engine=podman; fi
fi
if [[ "$engine" == docker ]]; then
  docker build -t "$tag" "$ROOT"
else
  ensure_podman
  bash "$CDC_SERVICES_ROOT/../container/base.sh"
  # --format docker: the OCI format has no HEALTHCHECK. The host's CA bundle goes into the
  # build read-only because outbound HTTPS (pip) may pass a proxy with its own CA.
  # --no-cache: buildah keys a RUN step's cache on its text, not on what a --mount=from= brings
  # in, so the runtime stage's `pip install` of the builder's wheels would be reused from the
  # previous build with the previous code (seen here: an image with a stale cdc).
  ca=()
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] && ca=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
  podman build --no-cache --format docker --network host "${ca[@]}" \
    --build-arg "PYTHON_BUILDER_IMAGE=$CDC_BASE_IMAGE" --build-arg "PYTHON_RUNTIME_IMAGE=$CDC_BASE_IMAGE" \
    -t "$tag" "$ROOT" >"$CDC_CONTAINERS_DIR/build.log" 2>&1 \
    || { tail -n 30 "$CDC_CONTAINERS_DIR/build.log" >&2; fail image "podman build failed (log: $CDC_CONTAINERS_DIR/build.log)"; }
  podman image prune -f >/dev/null 2>&1 || true  # the previous build's untagged layers
fi
info image "built $tag with $engine in $(($(date +%s) - started))s"
