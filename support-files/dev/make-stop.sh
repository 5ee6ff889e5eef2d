#!/usr/bin/env bash
# `make stop`: stop everything `make run` started (supervisord and all its programs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export BKLOG_HOME="$(pwd)" BKLOG_VAR_DIR="${BKLOG_VAR_DIR:-$(pwd)/var}"
export BKLOG_LOG_DIR="$BKLOG_VAR_DIR/log"
ctl=(.venv/bin/supervisorctl -c support-files/supervisord.conf)
if "${ctl[@]}" pid >/dev/null 2>&1; then
    "${ctl[@]}" shutdown
    echo "make stop: stopped supervisord and every program it ran"
else
    echo "make stop: nothing running"
fi
