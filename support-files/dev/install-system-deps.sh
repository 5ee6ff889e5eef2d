#!/usr/bin/env bash
# Install the Debian packages whose servers the tests and `make run` start by hand:
# redis-server, clickhouse-server (+ client) and PostgreSQL 15; and Chromium for the browser tests.
#
# Idempotent and non-interactive: it installs only what is missing, runs `apt-get update`
# only when something has to be installed, and never starts a system service (the servers
# are started on 127.0.0.1 by tests/servers.py and support-files/dev/run-server.sh).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# Packages this project needs, and what each is for.
#   redis-server        Redis 7.0 (Celery broker, locks, pub/sub)
#   clickhouse-server   ClickHouse 18.16 (event store)
#   clickhouse-client   the `clickhouse-client` CLI, handy for poking at a dev server
#   postgresql-15       PostgreSQL 15 server binaries under /usr/lib/postgresql/15/bin
#   util-linux          runuser/setpriv, to run initdb/postgres as the `postgres` user
#   prometheus          Prometheus 2.42 server and promtool (tests/ops: scrape /metrics, check rules)
#   zookeeper           ZooKeeper 3.8: the cluster topology's ClickHouse replication (make cluster,
#                       the tests' cluster pass, python -m chaos --topology cluster)
#   redis-sentinel      Redis Sentinel 7.0: the cluster topology's Redis failover
#   chromium            the browser tests/browser drives headless (posthog-js, analytics.js, the
#                       admin) through puppeteer-core: Debian's build, since nothing may download one
PACKAGES=(redis-server clickhouse-server clickhouse-client postgresql-15 util-linux prometheus zookeeper redis-sentinel chromium)

log() { printf 'install-system-deps: %s\n' "$*"; }

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

if [[ "$(id -u)" -ne 0 ]]; then
    log "must run as root (it calls apt-get)" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if is_installed "$pkg"; then
        log "present: $pkg"
    else
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    log "nothing to install"
    exit 0
fi

# Maintainer scripts ask invoke-rc.d to start services; a policy-rc.d that exits 101 forbids
# it. Most images ship one already; otherwise put one in place for the duration of the install.
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e "$POLICY" ]]; then
    log "adding a temporary $POLICY so no service is started"
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    trap 'rm -f "$POLICY"; log "removed the temporary $POLICY"' EXIT
fi

log "apt-get update"
apt-get update -qq

log "installing: ${missing[*]}"
apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >/dev/null

for pkg in "${missing[@]}"; do
    is_installed "$pkg" || { log "failed to install $pkg" >&2; exit 1; }
done
log "installed: ${missing[*]}"
