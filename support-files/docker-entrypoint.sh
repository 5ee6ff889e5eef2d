#!/usr/bin/env bash
# The image's entrypoint. One role per container, or `all` for everything under supervisord:
#   web               Gunicorn (gunicorn_config.py), registers in Consul when CONSUL_ENABLED=true
#   worker <role>     a Celery worker: all, ingestion, async, scheduler, or one queue name
#   beat              the Celery beat scheduler (several may run: the one holding the Redis lease sends)
#   migrate           Django and ClickHouse migrations, then exit
#   all               web, one worker per queue and beat under supervisord
# Anything else is run as a command (e.g. `python manage.py createsuperuser`).
set -euo pipefail
cd "${BKLOG_HOME:-/app}"

# Each container is one process tree: its metrics start from an empty folder.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/bklog-metrics}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR" "${BKLOG_VAR_DIR:-/var/lib/bklog}"
find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete

role="${1:-web}"
[[ $# -gt 0 ]] && shift
case "$role" in
    web)
        exec gunicorn -c gunicorn_config.py bklog_app.wsgi:application "$@"
        ;;
    worker)
        worker_role="${1:-${BKLOG_WORKER_ROLE:-all}}"
        [[ $# -gt 0 ]] && shift
        exec celery -A bklog_app worker --role "$worker_role" \
            --concurrency "${BKLOG_WORKER_CONCURRENCY:-2}" --hostname "$worker_role@%h" \
            --loglevel "${LOG_LEVEL:-INFO}" --without-gossip --without-mingle "$@"
        ;;
    beat)
        exec celery -A bklog_app beat --schedule "${BKLOG_VAR_DIR:-/var/lib/bklog}/celerybeat-schedule" \
            --loglevel "${LOG_LEVEL:-INFO}" "$@"
        ;;
    migrate)
        python manage.py migrate --noinput
        exec python manage.py migrate_clickhouse
        ;;
    all)
        # Static files were collected when the image was built (Dockerfile).
        export SUPERVISOR_NODAEMON=true BKLOG_LOCAL_STORES=false BKLOG_COLLECTSTATIC=false
        exec bash support-files/run-supervisord.sh "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
