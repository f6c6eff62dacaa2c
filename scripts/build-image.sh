#!/usr/bin/env bash
# Build the sloeval image without a Docker engine: buildah, chroot isolation, as root.
#
#   scripts/build-image.sh [TAG]          (default TAG: localhost/sloeval:test)
#
# The base is a local Debian bookworm with python3, made by debootstrap and imported with
# `podman import` (no registry is reachable here); the real Dockerfile is then built on it
# with --build-arg BASE_IMAGE. Set BASE_IMAGE to build on another base that is already
# in local storage (e.g. python:3.11-slim-bookworm pulled by hand), REBUILD_BASE=1 to redo it.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-localhost/sloeval:test}
base_tag=localhost/sloeval-base:bookworm
base=${BASE_IMAGE:-$base_tag}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: buildah --isolation chroot needs root" >&2
  exit 1
fi

if [ "$base" = "$base_tag" ] && { [ -n "${REBUILD_BASE:-}" ] || ! buildah inspect --type image "$base_tag" >/dev/null 2>&1; }; then
  rootfs=$(mktemp -d /var/tmp/sloeval-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build-image: debootstrap bookworm into $rootfs" >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  # What a slim base leaves out: apt lists and caches, docs, man pages, locales.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | podman import --quiet - "$base_tag" >/dev/null
  echo "build-image: base $base_tag imported" >&2
fi

# Behind a TLS-intercepting proxy pip needs the host's CA bundle during the build only.
cert_args=()
host_ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$host_ca" ]; then
  cert_args=(--volume "$host_ca:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi

buildah bud --isolation chroot --format docker --layers=false --quiet \
  "${cert_args[@]}" --build-arg "BASE_IMAGE=$base" --tag "$tag" . >/dev/null
echo "build-image: built $tag on $base" >&2
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E "sloeval(-base)?" >&2 || true
