#!/usr/bin/env bash
# Make the local base image (Debian bookworm + python3, no registry needed) when podman lacks it.
# The rootfs tarball is cached under $CDC_SERVICES_DIR/containers: debootstrap runs once per
# machine (about a minute), later runs import the tarball (seconds) or find the image present.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if podman image exists "$CDC_BASE_IMAGE"; then
  info base "$CDC_BASE_IMAGE present"
  exit 0
fi
if [[ ! -s "$CDC_BASE_TAR" ]]; then
  rootfs="$CDC_CONTAINERS_DIR/rootfs.tmp"
  rm -rf "$rootfs"
  mirror=$(debian_mirror)
  info base "debootstrap $CDC_DEBIAN_SUITE from $mirror (once per machine; log: $CDC_CONTAINERS_DIR/debootstrap.log)"
  started=$(date +%s)
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    "$CDC_DEBIAN_SUITE" "$rootfs" "$mirror" >"$CDC_CONTAINERS_DIR/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CDC_CONTAINERS_DIR/debootstrap.log" >&2; fail base "debootstrap failed (is $mirror reachable?)"; }
  # The image's own Python is the one pip installs into (no venv in a one-purpose image).
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$CDC_BASE_TAR.tmp" . && mv "$CDC_BASE_TAR.tmp" "$CDC_BASE_TAR"
  rm -rf "$rootfs"
  info base "rootfs cached in $CDC_BASE_TAR after $(($(date +%s) - started))s"
fi
podman import -q --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$CDC_BASE_TAR" "$CDC_BASE_IMAGE" >/dev/null \
  || fail base "podman import of $CDC_BASE_TAR failed (delete it to rebuild the rootfs)"
info base "imported $CDC_BASE_IMAGE"
