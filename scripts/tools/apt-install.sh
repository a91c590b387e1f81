#!/usr/bin/env bash
# apt-install.sh NAME DAEMON PACKAGE...
#
# Installs Debian packages for a server the tests start themselves, in a
# way that works without systemd (containers, CI): service starts are
# denied during the install (a temporary /usr/sbin/policy-rc.d, unless the
# machine has its own), package lists are refreshed once if missing or
# stale, and any DAEMON process the install started anyway is stopped.
# NAME prefixes messages. The per-tool scripts (prometheus.sh, mariadb.sh)
# call it only when their binaries are missing.
set -euo pipefail

name=$1 daemon=$2
shift 2
if [ $# -eq 0 ]; then
  echo "usage: apt-install.sh NAME DAEMON PACKAGE..." >&2
  exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$name: $* not installed and there is no apt-get; install them by hand" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "$name: installing needs root and there is no sudo" >&2
    exit 1
  fi
  sudo=(sudo -n)
fi

# Maintainer scripts start services through invoke-rc.d or
# deb-systemd-invoke; both obey policy-rc.d, and exit 101 denies every start.
policy=/usr/sbin/policy-rc.d
own_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# Temporary, from cellkit scripts/tools/apt-install.sh.\nexit 101\n' |
    "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  own_policy=1
fi
before=$(pgrep -x "$daemon" || true)
cleanup() {
  if [ -n "$own_policy" ]; then "${sudo[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

apt_install() {
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "$@" 2>&1
}
if ! out=$(apt_install "$@"); then
  echo "$out"
  # Images ship without package lists, or with stale ones (404s): refresh
  # them once and retry. Any other failure is real.
  if grep -Eq 'Unable to locate package|has no installation candidate|Failed to fetch|404 +Not Found' <<<"$out"; then
    echo "$name: package lists missing or stale; running apt-get update"
    "${sudo[@]}" apt-get update
    apt_install "$@"
  else
    exit 1
  fi
else
  echo "$out" | tail -n 3
fi

# Belt and braces: if a start slipped through anyway (a unit enabled under a
# running systemd), stop what the install started.
for pid in $(pgrep -x "$daemon" || true); do
  if ! grep -qx "$pid" <<<"$before"; then
    echo "$name: the install started a $daemon daemon (pid $pid); stopping it"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      "${sudo[@]}" systemctl stop "$daemon.service" 2>/dev/null || true
      "${sudo[@]}" systemctl disable "$daemon.service" 2>/dev/null || true
    fi
    "${sudo[@]}" kill "$pid" 2>/dev/null || true
  fi
done
