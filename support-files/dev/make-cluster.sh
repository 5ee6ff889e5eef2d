#!/usr/bin/env bash
# `make cluster`: the cluster topology on this machine (docs/operations.md#cluster-mode), as
# `make run` starts one node: ZooKeeper, 2 shards x 2 replicas of ClickHouse, Redis master +
# replica + 3 Sentinels and PostgreSQL under one supervisord, and two app nodes (a, b), each its
# own supervisord (support-files/run-supervisord.sh) with its own web port and worker names.
# Everything lives under var/cluster/. Safe to run again: what runs is kept, migrations are
# re-applied, the demo project reused. `make cluster-stop` stops it all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec .venv/bin/python -m bench.cluster start "$@"
