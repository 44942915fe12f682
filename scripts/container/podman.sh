#!/usr/bin/env bash
# podman with this project's containers.conf (runc, explicit ulimits: see common.sh).
# Usage: scripts/container/podman.sh ARGS...   e.g. podman.sh ps -a
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
command -v podman >/dev/null || fail podman "podman is not installed (make image installs it)"
exec podman "$@"
