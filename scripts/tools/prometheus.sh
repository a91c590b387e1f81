#!/usr/bin/env bash
# Installs the Prometheus server that infra/prometheus's tests start as a
# subprocess, from Debian's `prometheus` package. Idempotent: does nothing
# but print the version when `prometheus` is already on PATH. scripts/test
# calls it before `go test`; run it by hand before `go test ./infra/prometheus/`.
# No prometheus daemon is left running (see apt-install.sh).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v prometheus >/dev/null 2>&1; then
  bash apt-install.sh prometheus.sh prometheus prometheus
fi

command -v prometheus
prometheus --version 2>&1 | head -n 1
