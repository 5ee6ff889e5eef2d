"""`run_every_minute / hour / day` on the `scheduled` queue: once per period across the cluster.

Beat sends one fan-out message per period (more if several beats run). The fan-out claims the
period with a Redis NX key, so only the first message of a period does anything; it queues one
task per config that defines the method. Each of those claims (config, period) again, which
covers redelivered messages, and holds a running lock for as long as the call lasts: a run that
finds the previous one still going is skipped, and says so in the plugin's log.
"""

import time

import structlog
from django.conf import settings

from bklog_app.plugins.models import PluginConfig
from pipeline import locks
from pipeline.errors import is_outage
from pipeline.plugins import registry
from pipeline.plugins.logs import LogSink

logger = structlog.get_logger(__name__)

KINDS = {"minute": "run_every_minute", "hour": "run_every_hour", "day": "run_every_day"}
PERIODS = {"minute": 60, "hour": 3600, "day": 86400}


def period_of(now: float, period_seconds: int) -> int:
    """The number of the period `now` falls in; periods are aligned to the epoch (UTC)."""
    return int(now // period_seconds)


def fan_out(kind: str, period_seconds: int) -> tuple[int, list[int]]:
    """This period's number and the configs whose `run_every_<kind>` runs in it, for the task to
    queue; no configs when another message claimed the period first."""
    method = KINDS[kind]
    period = period_of(time.time(), period_seconds)
    ttl = max(period_seconds, settings.SCHEDULE_LOCK_TTL)
    if not locks.claim_once(f"plugins:schedule:{kind}:{period_seconds}:{period}", ttl):
        return period, []
    rows = PluginConfig.objects.filter(enabled=True).values_list("pk", "plugin__capabilities")
    return period, [
        config_id
        for config_id, capabilities in rows.iterator()
        if method in ((capabilities or {}).get("scheduled_tasks") or ())
    ]


def run_one(config_id: int, kind: str, period_seconds: int, period: int) -> bool:
    """Run `run_every_<kind>` of one config for one period; False if it did not run."""
    method = KINDS[kind]
    ttl = max(period_seconds, settings.SCHEDULE_LOCK_TTL)
    if not locks.claim_once(f"plugins:schedule:{kind}:{period_seconds}:{period}:{config_id}", ttl):
        return False
    snapshot = registry.config_snapshot(config_id)
    if snapshot is None:
        return False
    running_key = f"plugins:schedule-running:{kind}:{config_id}"
    token = locks.acquire(running_key, settings.PLUGIN_TIMEOUT_SECONDS + 30)
    if token is None:
        sink = LogSink(snapshot.id, snapshot.project_id, "")
        sink.system("WARN", f"{method} skipped: the previous run is still going")
        sink.flush()
        return False
    try:
        instance = registry.instance_for(snapshot)
        if instance is None or not instance.has(method):
            return False
        started = time.gmtime(period * period_seconds)
        instance.sink.system(
            "DEBUG", f"{method} for the period starting {time.strftime('%Y-%m-%dT%H:%M:%SZ', started)}"
        )
        try:
            instance.method(method)
        except Exception as exc:
            if is_outage(exc):
                raise
            registry.record_failure(snapshot, exc, method=method, sink=instance.sink)
            return True
        registry.record_success(snapshot)
        return True
    finally:
        locks.release(running_key, token)
