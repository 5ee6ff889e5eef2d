"""The chaos stack: bench/stack.py's whole stack (supervisord + PostgreSQL), under var/chaos/ on
ports of its own, with the shipped defaults: the suite proves the configuration users run. The few
settings it must change are in SUITE_SETTINGS, each with its reason, and every result names them.

The cluster form (`--topology cluster`) runs on bench/cluster.py's ClusterStack under
var/chaos-cluster/, with the same settings on both app nodes."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from bench.cluster import ClusterPorts, ClusterStack
from bench.stack import ROOT, Ports, Stack, api_request
from chaos.selection import PLUGIN_TIMEOUT_SECONDS

VAR = ROOT / "var" / "chaos"
PLUGINS_DIR = ROOT / "chaos" / "plugins"
PLUGIN_FOLDERS = ("chaos_raiser", "chaos_sleeper")

# Program names as supervisorctl wants them (group:program).
WORKER_PROGRAMS = {
    "ingestion": "bklog-workers:bklog-worker-ingestion",
    "ingestion_overflow": "bklog-workers:bklog-worker-ingestion-overflow",
    "default": "bklog-workers:bklog-worker-default",
    "scheduled": "bklog-workers:bklog-worker-scheduled",
    "async_export": "bklog-workers:bklog-worker-async-export",
}
WEB_PROGRAM = "bklog-web"
REDIS_PROGRAM = "bklog-local-stores:bklog-redis"
CLICKHOUSE_PROGRAM = "bklog-local-stores:bklog-clickhouse"
POSTGRES_PROGRAM = "bench-postgres"


def chaos_ports() -> Ports:
    """Not the bench's (18000...) nor `make run`'s (8000...)."""
    return Ports(
        web=int(os.environ.get("CHAOS_WEB_PORT", 28000)),
        redis=int(os.environ.get("CHAOS_REDIS_PORT", 26379)),
        clickhouse=int(os.environ.get("CHAOS_CLICKHOUSE_PORT", 29000)),
        clickhouse_http=int(os.environ.get("CHAOS_CLICKHOUSE_HTTP_PORT", 28123)),
        postgres=int(os.environ.get("CHAOS_POSTGRES_PORT", 25432)),
    )


# What decides how faults are recovered from: always the defaults, whatever the environment
# the suite is started from.
RECOVERY_SETTINGS = (
    "CELERY_VISIBILITY_TIMEOUT",
    "CELERY_UNACKED_RESTORE_INTERVAL",
    "INGESTION_RETRY_MAX_SECONDS",
    "INGESTION_JOURNAL_GRACE_SECONDS",
    "INGESTION_JOURNAL_SWEEP_SECONDS",
    "INGESTION_BATCH_SECONDS",
    "PLUGIN_CHAIN_CACHE_SECONDS",
)

# Where the suite's stack differs from a default install: setting -> (value, why). Nothing of
# RECOVERY_SETTINGS belongs here.
SUITE_SETTINGS: dict[str, tuple[str, str]] = {
    "PLUGINS_DIR": (
        str(PLUGINS_DIR),
        "the chaos plugins (chaos_raiser, chaos_sleeper) are installed from chaos/plugins",
    ),
    "PLUGIN_TIMEOUT_SECONDS": (
        str(PLUGIN_TIMEOUT_SECONDS),
        "chaos_sleeper must outlast the plugin time limit; with the default (30 s) each of its events "
        "would hold a pool process for half a minute",
    ),
    "BKLOG_WORKER_STOPWAITSECS": ("20", "only how long stopping the stack after the run may take"),
    "BKLOG_WEB_STOPWAITSECS": ("20", "only how long stopping the stack after the run may take"),
    "LOG_LEVEL": ("WARNING", "less log to write under load; no behaviour depends on it"),
}


def suite_settings() -> dict[str, dict[str, str]]:
    """SUITE_SETTINGS as the results record them."""
    return {name: {"value": value, "reason": reason} for name, (value, reason) in SUITE_SETTINGS.items()}


def _suite_env(env: dict[str, str]) -> dict[str, str]:
    # The bench registers its naive baseline task; the suite runs the task modules that ship.
    env.pop("BKLOG_BENCH_TASKS", None)
    for name in RECOVERY_SETTINGS:
        env.pop(name, None)
    env.update({name: value for name, (value, _) in SUITE_SETTINGS.items()})
    return env


class ChaosStack(Stack):
    def __init__(self) -> None:
        super().__init__(chaos_ports(), var=VAR)

    @property
    def web_ports(self) -> tuple[int, ...]:
        return (self.ports.web,)

    def env(self) -> dict[str, str]:
        return _suite_env(super().env())

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(ROOT / "support-files" / "supervisorctl.sh"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
        )


CLUSTER_VAR = ROOT / "var" / "chaos-cluster"


def chaos_cluster_ports() -> ClusterPorts:
    """Not `make cluster`'s (8001, 8002, 30100...) nor the bench's (18001, 18002, 32100...)."""
    return ClusterPorts(
        stores=int(os.environ.get("CHAOS_CLUSTER_STORES_PORT", 31100)),
        postgres=int(os.environ.get("CHAOS_CLUSTER_POSTGRES_PORT", 31130)),
        web=(
            int(os.environ.get("CHAOS_CLUSTER_WEB_PORT", 28001)),
            int(os.environ.get("CHAOS_CLUSTER_WEB_PORT", 28001)) + 1,
        ),
    )


class ChaosClusterStack(ClusterStack):
    """Its stores are not restarted by their supervisord when they die: the suite kills them and
    brings them back itself, after a hold it chooses (a Redis master restarted within a second
    would never be failed over)."""

    def __init__(self) -> None:
        super().__init__(CLUSTER_VAR, chaos_cluster_ports(), store_autorestart=False)

    def node_env(self, node: str) -> dict[str, str]:
        return _suite_env(super().node_env(node))


@dataclass
class Setup:
    key: str
    project_id: int
    token: str
    fuzz_project_id: int
    fuzz_token: str
    plugin_config_names: dict[str, str]  # folder -> "<plugin name> (<config id>)"


def prepare(stack: ChaosStack | ChaosClusterStack, stamp: str) -> Setup:
    """An organization, the measured project with both chaos plugins enabled, and a second
    project that receives the malformed and hypothesis-generated requests."""
    org = "bklog chaos"
    key = json.loads(stack.manage("create_api_key", "chaos", "--org", org, "--staff", "--json"))["key"]
    organizations = api_request(stack, "GET", "/api/organizations/", key)
    rows = organizations.get("results", organizations) if isinstance(organizations, dict) else organizations
    organization_id = next(row["id"] for row in rows if row["name"] == org)

    def project(name: str) -> dict:
        body = {"organization": organization_id, "name": f"{name}-{stamp}"}
        return api_request(stack, "POST", "/api/projects/", key, body)

    main, fuzz = project("chaos"), project("chaos-fuzz")
    names = {}
    plugins = api_request(stack, "GET", "/api/plugins/", key)
    plugins = plugins.get("results", plugins) if isinstance(plugins, dict) else plugins
    for order, folder in enumerate(PLUGIN_FOLDERS):
        existing = next((p for p in plugins if p.get("source_type") == "local" and p.get("path") == folder), None)
        plugin = existing or api_request(stack, "POST", "/api/plugins/", key, {"source_type": "local", "path": folder})
        config = api_request(
            stack,
            "POST",
            f"/api/projects/{main['id']}/plugin_configs/",
            key,
            {"plugin": plugin["id"], "enabled": True, "order": order, "config": {}},
        )
        names[folder] = f"{plugin['name']} ({config['id']})"
    return Setup(key, main["id"], main["api_token"], fuzz["id"], fuzz["api_token"], names)
