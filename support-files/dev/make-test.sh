#!/usr/bin/env bash
# `make test`: lint, then the whole suite twice against real servers: Django on SQLite, then
# on PostgreSQL. Redis, ClickHouse and PostgreSQL are started by tests/conftest.py on free
# loopback ports and stopped at the end.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bin=.venv/bin
status=0

echo "== ruff"
$bin/ruff check . || status=1
$bin/ruff format --check . || status=1
$bin/lint-imports || status=1

for database in sqlite postgres; do
    echo "== pytest, Django database: $database"
    BKLOG_TEST_DATABASE=$database $bin/python -m pytest "$@"
    code=$?
    if [ $code -ne 0 ]; then status=$code; fi
done

# The short fault suite (docs/reliability.md) on a stack of its own under var/chaos/; it stops
# that stack (every process it started) on the way out, failed or not. BKLOG_TEST_CHAOS=0 skips
# it (e.g. to rerun only pytest).
if [ "${BKLOG_TEST_CHAOS:-1}" != 0 ]; then
    echo "== chaos, short form"
    $bin/python -m chaos --mode ci
    code=$?
    if [ $code -ne 0 ]; then status=$code; fi
fi
exit $status
