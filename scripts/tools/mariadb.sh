#!/usr/bin/env bash
# Installs the MariaDB server and client that infra/mysql's tests (and
# `cellctl lab up --db mariadb`) start as local processes, from Debian's
# `mariadb-server` and `mariadb-client` packages. Idempotent: does nothing
# but print the version when `mariadbd` is already installed. scripts/test
# calls it before `go test`; run it by hand before `go test ./infra/mysql/...`.
# No mariadb daemon is left running (see apt-install.sh): the tests and the
# lab start their own servers, in their own directories, on their own ports.
set -euo pipefail
cd "$(dirname "$0")"

find_mariadbd() {
  command -v mariadbd 2>/dev/null && return 0
  for p in /usr/sbin/mariadbd /usr/libexec/mariadbd; do
    if [ -x "$p" ]; then echo "$p"; return 0; fi
  done
  return 1
}

if ! find_mariadbd >/dev/null || ! command -v mariadb-install-db >/dev/null 2>&1 || ! command -v mariadb >/dev/null 2>&1; then
  bash apt-install.sh mariadb.sh mariadbd mariadb-server mariadb-client
fi

bin=$(find_mariadbd) || { echo "mariadb.sh: mariadbd is not installed after the install" >&2; exit 1; }
echo "$bin"
"$bin" --version 2>&1 | head -n 1
