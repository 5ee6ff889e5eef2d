# Sourced by run-supervisord.sh and supervisorctl.sh: a default for every %(ENV_...)s variable
# that supervisord.conf uses (supervisord refuses an undefined one). Anything already set in the
# environment wins. The variables are listed in the README's configuration table.
_support_files="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export BKLOG_HOME="${BKLOG_HOME:-$(cd "$_support_files/.." && pwd)}"
export BKLOG_VAR_DIR="${BKLOG_VAR_DIR:-$BKLOG_HOME/var}"
export BKLOG_LOG_DIR="${BKLOG_LOG_DIR:-$BKLOG_VAR_DIR/log}"
export BKLOG_BIN="${BKLOG_BIN:-$BKLOG_HOME/.venv/bin}"
# This node's name in the worker names (ingestion@<name>): unique per node of a cluster.
export BKLOG_NODE_NAME="${BKLOG_NODE_NAME:-$(hostname)}"
export BKLOG_LOCAL_STORES="${BKLOG_LOCAL_STORES:-false}"
export BKLOG_REDIS_PORT="${BKLOG_REDIS_PORT:-6379}"
export BKLOG_CLICKHOUSE_PORT="${BKLOG_CLICKHOUSE_PORT:-9000}"
export BKLOG_CLICKHOUSE_HTTP_PORT="${BKLOG_CLICKHOUSE_HTTP_PORT:-8123}"
export BKLOG_INGESTION_CONCURRENCY="${BKLOG_INGESTION_CONCURRENCY:-2}"
export BKLOG_INGESTION_OVERFLOW_CONCURRENCY="${BKLOG_INGESTION_OVERFLOW_CONCURRENCY:-1}"
export BKLOG_DEFAULT_CONCURRENCY="${BKLOG_DEFAULT_CONCURRENCY:-2}"
export BKLOG_SCHEDULED_CONCURRENCY="${BKLOG_SCHEDULED_CONCURRENCY:-1}"
export BKLOG_ASYNC_EXPORT_CONCURRENCY="${BKLOG_ASYNC_EXPORT_CONCURRENCY:-1}"
# Celery workers and beat (and the local ClickHouse) run under Linux's SCHED_IDLE policy: when
# the cores are busy the scheduler serves capture requests first, at once, since their latency
# is what clients see, and batch work takes the rest; over time ingestion still gets all the CPU
# the web does not use (under a sustained overload it waits, its messages safe in Redis).
# `other` is the default Linux policy, where BKLOG_WORKER_NICE alone sets the share.
export BKLOG_WORKER_CPU_POLICY="${BKLOG_WORKER_CPU_POLICY:-idle}"
export BKLOG_WORKER_NICE="${BKLOG_WORKER_NICE:-5}"
# Longer than the longest task's soft time limit, so a stopping worker finishes its task (an
# export interrupted anyway resumes from its last chunk; ingestion acks late and requeues).
export BKLOG_WORKER_STOPWAITSECS="${BKLOG_WORKER_STOPWAITSECS:-120}"
# Longer than GUNICORN_GRACEFUL_TIMEOUT (30 s), so in-flight requests finish.
export BKLOG_WEB_STOPWAITSECS="${BKLOG_WEB_STOPWAITSECS:-40}"
export SUPERVISOR_NODAEMON="${SUPERVISOR_NODAEMON:-false}"
export LOG_LEVEL="${LOG_LEVEL:-INFO}"
# Every process under this supervisord writes its metrics here; /metrics adds them up.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$BKLOG_VAR_DIR/prometheus}"
# Extra program files: the dev-only Redis and ClickHouse when BKLOG_LOCAL_STORES=true, and any
# *.conf an operator drops in $BKLOG_VAR_DIR/supervisor/conf.d/.
if [[ -z "${BKLOG_SUPERVISOR_INCLUDE:-}" ]]; then
    BKLOG_SUPERVISOR_INCLUDE="$BKLOG_VAR_DIR/supervisor/conf.d/*.conf"
    if [[ "$BKLOG_LOCAL_STORES" == true ]]; then
        BKLOG_SUPERVISOR_INCLUDE="$_support_files/supervisord.local-stores.conf $BKLOG_SUPERVISOR_INCLUDE"
    fi
fi
export BKLOG_SUPERVISOR_INCLUDE
export PATH="$BKLOG_BIN:$PATH"
unset _support_files
