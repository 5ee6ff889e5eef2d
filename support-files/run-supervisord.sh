#!/usr/bin/env bash
# Start supervisord with support-files/supervisord.conf, after giving every variable the
# config refers to a default (supervisord refuses to start on an undefined %(ENV_X)s).
# Anything already set in the environment wins. Extra arguments go to supervisord.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export BKLOG_HOME="${BKLOG_HOME:-$(cd "$here/.." && pwd)}"
export BKLOG_VAR_DIR="${BKLOG_VAR_DIR:-$BKLOG_HOME/var}"
export BKLOG_LOG_DIR="${BKLOG_LOG_DIR:-$BKLOG_VAR_DIR/log}"
export BKLOG_BIN="${BKLOG_BIN:-$BKLOG_HOME/.venv/bin}"
export BKLOG_LOCAL_STORES="${BKLOG_LOCAL_STORES:-false}"
export BKLOG_REDIS_PORT="${BKLOG_REDIS_PORT:-6379}"
export BKLOG_CLICKHOUSE_PORT="${BKLOG_CLICKHOUSE_PORT:-9000}"
export BKLOG_CLICKHOUSE_HTTP_PORT="${BKLOG_CLICKHOUSE_HTTP_PORT:-8123}"
export BKLOG_INGESTION_CONCURRENCY="${BKLOG_INGESTION_CONCURRENCY:-2}"
export BKLOG_DEFAULT_CONCURRENCY="${BKLOG_DEFAULT_CONCURRENCY:-2}"
export BKLOG_SCHEDULED_CONCURRENCY="${BKLOG_SCHEDULED_CONCURRENCY:-1}"
export BKLOG_ASYNC_EXPORT_CONCURRENCY="${BKLOG_ASYNC_EXPORT_CONCURRENCY:-1}"
# Longer than the longest task's soft time limit (exports: 1800 s soft limit is not waited
# for; an interrupted export resumes from its last chunk). Ingestion batches take seconds.
export BKLOG_WORKER_STOPWAITSECS="${BKLOG_WORKER_STOPWAITSECS:-120}"
export BKLOG_WEB_STOPWAITSECS="${BKLOG_WEB_STOPWAITSECS:-40}"
export SUPERVISOR_NODAEMON="${SUPERVISOR_NODAEMON:-false}"
export LOG_LEVEL="${LOG_LEVEL:-INFO}"
export PATH="$BKLOG_BIN:$PATH"

mkdir -p "$BKLOG_VAR_DIR/supervisor" "$BKLOG_LOG_DIR"
exec "$BKLOG_BIN/supervisord" -c "$here/supervisord.conf" "$@"
