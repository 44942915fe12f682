# Shared settings of the container scripts. Sourced, never executed.
# Podman runs here without a registry: the base image is made from Debian's packages with
# debootstrap and cached under $CDC_SERVICES_DIR/containers, so CI re-runs only import it.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../services" && pwd)/common.sh"

fail() { echo "container: $1: ERROR: $2" >&2; exit 1; }
info() { echo "container: $1: $2" >&2; }

CDC_CONTAINERS_DIR="$CDC_SERVICES_DIR/containers"
# Bump the version when the debootstrap package list changes: the cached rootfs is rebuilt.
CDC_BASE_IMAGE="${CDC_BASE_IMAGE:-localhost/bookworm-python:v1}"
CDC_BASE_TAR="$CDC_CONTAINERS_DIR/bookworm-python-v1.tar"
CDC_IMAGE="${CDC_IMAGE:-localhost/liberator-cdc:local}"
CDC_DEBIAN_SUITE=bookworm
mkdir -p "$CDC_CONTAINERS_DIR"

# The sandbox's cgroup layout and rlimits: crun refuses the hybrid cgroup layout (runc works),
# and setrlimit above these limits is not permitted, so containers get them explicitly.
# Written on every use (a few bytes), so a services directory from an older checkout gets the
# current settings; an operator's own CONTAINERS_CONF is left alone.
if [[ -z "${CONTAINERS_CONF:-}" ]]; then
  export CONTAINERS_CONF="$CDC_CONTAINERS_DIR/containers.conf"
  cat >"$CONTAINERS_CONF.tmp" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
  mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
fi

# has_docker: a Docker engine answers (the client alone is not enough).
has_docker() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# debian_mirror: the first Debian mirror apt uses here (deb822 or one-line sources).
debian_mirror() {
  local m
  m=$(grep -rhoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+/debian/?' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | grep -oE 'https?://[^[:space:]]+' | head -n 1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

# ensure_podman: podman and what it needs to build and run rootful containers here.
ensure_podman() {
  apt_ensure podman podman buildah debootstrap fuse-overlayfs slirp4netns uidmap runc
}
