#!/usr/bin/env bash
# `make run`: the whole stack on this machine under one supervisord (support-files/
# supervisord.conf): Redis and ClickHouse on 127.0.0.1 with data under var/, Gunicorn, one
# Celery worker per queue, beat. Django uses SQLite unless DATABASE_URL says otherwise.
# Safe to run again: a running stack is kept, migrations re-applied, the demo project reused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$(pwd)"

export BKLOG_HOME="$root"
export BKLOG_VAR_DIR="${BKLOG_VAR_DIR:-$root/var}"
export BKLOG_LOCAL_STORES=true
export BKLOG_REDIS_PORT="${BKLOG_REDIS_PORT:-6379}"
export BKLOG_CLICKHOUSE_PORT="${BKLOG_CLICKHOUSE_PORT:-9000}"
export BKLOG_CLICKHOUSE_HTTP_PORT="${BKLOG_CLICKHOUSE_HTTP_PORT:-8123}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:$BKLOG_REDIS_PORT/0}"
export CLICKHOUSE_HOST="${CLICKHOUSE_HOST:-127.0.0.1}"
export CLICKHOUSE_PORT="${CLICKHOUSE_PORT:-$BKLOG_CLICKHOUSE_PORT}"
export PORT="${PORT:-8000}"
export CONSUL_ENABLED="${CONSUL_ENABLED:-false}"
py="$root/.venv/bin/python"
ctl=("$root/.venv/bin/supervisorctl" -c "$root/support-files/supervisord.conf")

say() { printf 'make run: %s\n' "$*"; }

mkdir -p "$BKLOG_VAR_DIR/log" "$BKLOG_VAR_DIR/supervisor"
if BKLOG_LOG_DIR="$BKLOG_VAR_DIR/log" "${ctl[@]}" pid >/dev/null 2>&1; then
    say "supervisord already running; keeping it"
    # The web process serves the static files it found when it started: restart it if they changed.
    manifest="${STATIC_ROOT:-$BKLOG_VAR_DIR/static}/staticfiles.json"
    before="$(md5sum "$manifest" 2>/dev/null || true)"
    "$py" manage.py collectstatic --noinput --verbosity 0
    if [[ "$(md5sum "$manifest")" != "$before" ]]; then
        say "static files changed; restarting the web process"
        BKLOG_LOG_DIR="$BKLOG_VAR_DIR/log" "${ctl[@]}" restart bklog-web >/dev/null
    fi
else
    say "starting supervisord (logs in $BKLOG_VAR_DIR/log; static files collected first)"
    bash support-files/run-supervisord.sh
fi

say "waiting for Redis and ClickHouse"
"$py" - <<'PY'
import os, sys, time
import redis
from clickhouse_driver import Client
deadline = time.monotonic() + 60
last = None
while time.monotonic() < deadline:
    try:
        redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2).ping()
        Client(host=os.environ["CLICKHOUSE_HOST"], port=int(os.environ["CLICKHOUSE_PORT"]), connect_timeout=2).execute("SELECT 1")
        sys.exit(0)
    except Exception as exc:  # still starting
        last = exc
        time.sleep(0.3)
sys.exit(f"Redis or ClickHouse did not come up within 60 s ({last}); see var/log/redis.log and var/log/clickhouse.log")
PY

say "applying Django and ClickHouse migrations"
"$py" manage.py migrate --noinput >/dev/null
"$py" manage.py migrate_clickhouse

project_json="$("$py" manage.py create_project demo --org Demo --get-or-create --json)"
key_json="$("$py" manage.py create_api_key demo --org Demo --json)"

say "waiting for the web process"
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$PORT/_health" >/dev/null 2>&1; then break; fi
    sleep 0.2
done
"${ctl[@]}" status || true

PROJECT_JSON="$project_json" KEY_JSON="$key_json" "$py" - <<'PY'
import json, os
project = json.loads(os.environ["PROJECT_JSON"])
key = json.loads(os.environ["KEY_JSON"])["key"]
port = os.environ["PORT"]
url = f"http://127.0.0.1:{port}"
print(f"""
bklog is running.

  Send events to:   {url}   (PostHog-compatible: /batch/, /e/, /capture/, ...)
  Project token:    {project['token']}   (project id {project['id']})
  API key (demo):   {key}
  Admin:            {url}/admin/   (create a login: .venv/bin/python manage.py createsuperuser)

Send an event:
  curl -s {url}/e/ -H 'Content-Type: application/json' \\
    -d '{{"api_key": "{project['token']}", "event": "hello", "distinct_id": "user-1", "properties": {{"plan": "free"}}}}'

Read it back:
  curl -s -H 'Authorization: Bearer {key}' '{url}/api/projects/{project['id']}/events/?limit=5'

Stop everything: make stop
""")
PY
