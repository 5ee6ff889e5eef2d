#!/usr/bin/env bash
# supervisorctl for the supervisord that run-supervisord.sh started, with the same defaults:
#   support-files/supervisorctl.sh status
#   support-files/supervisorctl.sh restart bklog-workers:*
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=support-files/supervisor-env.sh
source "$here/supervisor-env.sh"
exec "$BKLOG_BIN/supervisorctl" -c "$here/supervisord.conf" "$@"
