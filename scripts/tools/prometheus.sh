#!/usr/bin/env bash
# Installs the Prometheus server that infra/prometheus's tests start as a
# subprocess, from Debian's `prometheus` package. Idempotent: does nothing
# but print the version when `prometheus` is already on PATH. scripts/test
# calls it before `go test`; run it by hand before `go test ./infra/prometheus/`.
#
# It works without systemd (containers, CI): service starts are denied
# during the install, and no prometheus daemon is left running.
set -euo pipefail

if ! command -v prometheus >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "prometheus.sh: prometheus is not on PATH and there is no apt-get; install Prometheus 2.x by hand" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "prometheus.sh: installing needs root and there is no sudo" >&2
      exit 1
    fi
    sudo=(sudo -n)
  fi

  # The package's maintainer scripts start the service (invoke-rc.d or
  # deb-systemd-invoke). Both obey /usr/sbin/policy-rc.d: exit 101 denies
  # every start. Install one for the duration unless the machine has its
  # own (Docker images usually do).
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Temporary, from cellkit scripts/tools/prometheus.sh.\nexit 101\n' |
      "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    own_policy=1
  fi
  before=$(pgrep -x prometheus || true)
  cleanup() {
    if [ -n "$own_policy" ]; then "${sudo[@]}" rm -f "$policy"; fi
  }
  trap cleanup EXIT

  apt_install() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends prometheus 2>&1
  }
  if ! out=$(apt_install); then
    echo "$out"
    # Images ship without package lists, or with stale ones (404s):
    # refresh them once and retry. Any other failure is real.
    if grep -Eq 'Unable to locate package|has no installation candidate|Failed to fetch|404 +Not Found' <<<"$out"; then
      echo "prometheus.sh: package lists missing or stale; running apt-get update"
      "${sudo[@]}" apt-get update
      apt_install
    else
      exit 1
    fi
  else
    echo "$out" | tail -n 3
  fi

  # Belt and braces: if a start slipped through anyway (a unit enabled
  # under a running systemd), stop what the install started.
  if pgrep -x prometheus >/dev/null; then
    for pid in $(pgrep -x prometheus); do
      if ! grep -qx "$pid" <<<"$before"; then
        echo "prometheus.sh: the install started a prometheus daemon (pid $pid); stopping it"
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
          "${sudo[@]}" systemctl stop prometheus.service || true
          "${sudo[@]}" systemctl disable prometheus.service || true
        fi
        "${sudo[@]}" kill "$pid" 2>/dev/null || true
      fi
    done
  fi
  if now=$(pgrep -x prometheus); then
    for pid in $now; do
      if ! grep -qx "$pid" <<<"$before"; then
        echo "prometheus.sh: a prometheus daemon (pid $pid) is still running after the install" >&2
      fi
    done
  fi
fi

command -v prometheus
prometheus --version 2>&1 | head -n 1
