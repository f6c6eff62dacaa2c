#!/usr/bin/env bash
# Install the Debian packages the demo and the tests need, when they are missing.
# Usage: scripts/install-system-deps.sh [package ...]   (default: what `make test` needs)
set -euo pipefail

packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
  packages=(prometheus victoria-metrics prometheus-alertmanager wrk postgresql)
fi

declare -A binary_of=(
  [prometheus]=/usr/bin/prometheus
  [victoria-metrics]=/usr/bin/victoria-metrics
  [prometheus-alertmanager]=/usr/bin/prometheus-alertmanager
  [wrk]=/usr/bin/wrk
  [postgresql]=/usr/lib/postgresql/15/bin/postgres
  [buildah]=/usr/bin/buildah
  [podman]=/usr/bin/podman
  [debootstrap]=/usr/sbin/debootstrap
)

missing=()
for package in "${packages[@]}"; do
  if [ ! -x "${binary_of[$package]:-/nonexistent}" ]; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: missing ${missing[*]} and no apt-get here; install them by hand" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "install-system-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
# The packages' own init scripts would start system-wide services; the demo and tests
# start their own instances on loopback ports instead, so service starts are refused.
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  created_policy=1
fi
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ -n "$created_policy" ]; then
  $sudo rm -f "$policy"
fi
