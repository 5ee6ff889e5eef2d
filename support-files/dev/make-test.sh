#!/usr/bin/env bash
# `make test`: lint, then the whole suite twice against real servers: Django on SQLite, then
# on PostgreSQL. Redis, ClickHouse and PostgreSQL are started by tests/conftest.py on free
# loopback ports and stopped at the end.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bin=.venv/bin
status=0
# Each pass's output is also kept in var/test-logs/, and a summary ends the run: what CI shows of
# a run is its last lines, so they say which pass failed, which tests, and where the rest is.
logs=var/test-logs
mkdir -p "$logs"
rm -f "$logs"/*.log
summary=()

# run NAME COMMAND...: run one pass, its output to the terminal and to $logs/NAME.log.
run() {
    local name=$1
    shift
    "$@" 2>&1 | tee "$logs/$name.log"
    local code=${PIPESTATUS[0]}
    summary+=("$(printf '%-24s exit %s' "$name" "$code")")
    return "$code"
}

echo "== ruff"
run ruff-check $bin/ruff check . || status=1
run ruff-format $bin/ruff format --check . || status=1
run lint-imports $bin/lint-imports || status=1

# The browser tier (tests/browser: posthog-js, analytics.js and the admin in headless Chromium,
# posthog-node) runs once, in the PostgreSQL pass: it checks the clients against bklog's HTTP
# contracts, which do not depend on the database engine, and PostgreSQL is what a deployment's
# Gunicorn runs on. Left out of the SQLite pass, it does not cost its time (about 40 s) twice.
for database in sqlite postgres; do
    echo "== pytest, Django database: $database"
    only_once=()
    if [ "$database" = sqlite ]; then only_once=(--ignore=tests/browser); fi
    BKLOG_TEST_DATABASE=$database run "pytest-$database" $bin/python -m pytest "${only_once[@]}" "$@"
    code=$?
    # 5 is "no tests collected": arguments that select only browser tests, in the SQLite pass.
    if [ $code -eq 5 ] && [ ${#only_once[@]} -gt 0 ]; then code=0; fi
    if [ $code -ne 0 ]; then status=$code; fi
done

# The cluster pass (docs/operations.md#cluster-mode): ZooKeeper, 2 x 2 ClickHouse servers, a Redis
# master and replica behind three Sentinels, PostgreSQL; the cluster's own tests, then the
# ingestion, events API, export and SDK tests unchanged. Only with no arguments (a full run): a
# rerun of chosen tests does not need it. BKLOG_TEST_CLUSTER=0 skips it.
if [ $# -eq 0 ] && [ "${BKLOG_TEST_CLUSTER:-1}" != 0 ]; then
    echo "== pytest, cluster topology"
    BKLOG_TEST_TOPOLOGY=cluster BKLOG_TEST_DATABASE=postgres run pytest-cluster $bin/python -m pytest \
        tests/cluster tests/pipeline/test_ingestion_e2e.py tests/pipeline/test_capture_publish.py \
        tests/pipeline/test_dedup.py tests/pipeline/test_clickhouse_sql.py tests/bklog_app/test_events_api.py \
        tests/bklog_app/test_posthog_sdk.py tests/exports tests/privacy/test_deletion_e2e.py tests/privacy/test_mutations.py
    code=$?
    if [ $code -ne 0 ]; then status=$code; fi
fi

# The short fault suite (docs/reliability.md), on one node then on the cluster, each on a stack
# of its own under var/ that it stops (every process it started) on the way out, failed or not.
# BKLOG_TEST_CHAOS=0 skips it (e.g. to rerun only pytest).
if [ "${BKLOG_TEST_CHAOS:-1}" != 0 ]; then
    echo "== chaos, short form"
    run chaos $bin/python -m chaos --mode ci
    code=$?
    if [ $code -ne 0 ]; then status=$code; fi
    # Its cluster form: a ClickHouse replica killed, the Redis master killed (Sentinel fails
    # over), app node a killed whole, under load through both nodes (about 3 minutes).
    echo "== chaos, short form, cluster topology"
    run chaos-cluster $bin/python -m chaos --mode ci --topology cluster
    code=$?
    if [ $code -ne 0 ]; then status=$code; fi
fi

echo
echo "== summary (each pass's output is in $logs/)"
printf '%s\n' "${summary[@]}"
# pytest's short summary lines and internal errors; the fault suites' verdicts.
grep -h -E '^(FAILED|ERROR) |^INTERNALERROR> [A-Za-z0-9_.]*(Error|Exception)|^FAIL: ' "$logs"/*.log | cut -c1-300 | head -40
exit $status
