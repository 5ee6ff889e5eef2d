#!/usr/bin/env bash
# Start supervisord with support-files/supervisord.conf: the web tier, one Celery worker per
# queue and beat (plus Redis and ClickHouse when BKLOG_LOCAL_STORES=true, for `make run`), after
# `manage.py collectstatic` (skipped with BKLOG_COLLECTSTATIC=false).
# Every variable the config uses gets a default in supervisor-env.sh; anything already set in the
# environment wins. Extra arguments go to supervisord (e.g. -n to stay in the foreground).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=support-files/supervisor-env.sh
source "$here/supervisor-env.sh"

if "$BKLOG_BIN/supervisorctl" -c "$here/supervisord.conf" pid >/dev/null 2>&1; then
    echo "run-supervisord: a supervisord already runs with $BKLOG_VAR_DIR; use support-files/supervisorctl.sh" >&2
    exit 1
fi
mkdir -p "$BKLOG_VAR_DIR/supervisor/conf.d" "$BKLOG_LOG_DIR" "$PROMETHEUS_MULTIPROC_DIR"
# The whole process tree starts now: samples of processes from an earlier run would be added
# to the new ones forever (Prometheus sees the counters reset, which rate() handles).
find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete
# The web process serves STATIC_ROOT (WhiteNoise) as it finds it at start. The image collected its
# static files at build time and says so with BKLOG_COLLECTSTATIC=false.
if [[ "${BKLOG_COLLECTSTATIC:-true}" != false ]]; then
    (cd "$BKLOG_HOME" && "$BKLOG_BIN/python" manage.py collectstatic --noinput --verbosity 0)
fi
exec "$BKLOG_BIN/supervisord" -c "$here/supervisord.conf" "$@"
