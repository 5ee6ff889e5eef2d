"""The buffer in front of the plugin method `export_events` (docs/contracts.md#plugin-api), on the `default` queue.

Step 8 appends each stored event to a Redis list per plugin config. A buffer is flushed when it
reaches `export_events_buffer_bytes`, or `export_events_buffer_seconds` after its first event:
a countdown task when that is short, and the due-job poller in any case (the sorted set of due
buffers), so a lost message delays a flush but never loses it. Flushing renames the list to a
batch key in one step; the export task reads the batch by key (messages carry keys, not events)
and deletes it once the batch was exported or dead-lettered.

Buffering runs inside ingestion (step 8), so flushes are queued by task name
(pipeline/celery_tasks.py); a retry of `export_events` goes back to its task as a `RetryLater`.
(File and historical exports are pipeline/exports/, another thing.)
"""

import time
import uuid

import orjson
import structlog
from django.conf import settings

from bklog_app.plugins.models import PluginConfig
from pipeline.celery_tasks import send
from pipeline.deadletters.record import dead_letter
from pipeline.errors import is_outage
from pipeline.plugins import registry
from pipeline.plugins.api import RetryError
from pipeline.plugins.retries import EXPORT_EVENTS_DELAYS, RetryLater, max_attempts, next_delay
from pipeline.queues import TaskName
from pipeline.redis import get_redis

logger = structlog.get_logger(__name__)

DUE_KEY = "plugins:export-due"
BATCH_TTL_SECONDS = 7 * 24 * 3600

_FLUSH = """
redis.call('del', KEYS[2])
redis.call('zrem', KEYS[3], ARGV[1])
if redis.call('exists', KEYS[1]) == 1 then
    redis.call('rename', KEYS[1], KEYS[4])
    redis.call('expire', KEYS[4], tonumber(ARGV[2]))
    return 1
end
return 0
"""


def _buffer_key(config_id: int) -> str:
    return f"plugins:export-buffer:{config_id}"


def _bytes_key(config_id: int) -> str:
    return f"plugins:export-buffer-bytes:{config_id}"


def buffer_events(snapshot: registry.ConfigSnapshot, events: list[dict]) -> None:
    """Append events (plugin format) to the config's buffer; flush when it is full."""
    export = snapshot.export
    payload = [orjson.dumps(event) for event in events if event.get("event") not in export.ignore]
    if not payload:
        return
    redis = get_redis()
    pipe = redis.pipeline()
    pipe.rpush(_buffer_key(snapshot.id), *payload)
    pipe.incrby(_bytes_key(snapshot.id), sum(len(p) for p in payload))
    length, size = pipe.execute()
    if length == len(payload):
        # The buffer was empty: its clock starts now.
        redis.zadd(DUE_KEY, {str(snapshot.id): time.time() + export.buffer_seconds}, nx=True)
        if export.buffer_seconds <= settings.PLUGIN_MAX_COUNTDOWN_SECONDS:
            send(TaskName.PLUGIN_FLUSH_EXPORT_BUFFER, snapshot.id, countdown=export.buffer_seconds)
    if size >= export.buffer_bytes:
        flush(snapshot.id)


def flush(config_id: int) -> str | None:
    """Hand the config's buffer to an export task; the batch key, or None if it was empty."""
    batch_key = f"plugins:export-batch:{config_id}:{uuid.uuid4().hex}"
    keys = [_buffer_key(config_id), _bytes_key(config_id), DUE_KEY, batch_key]
    if not get_redis().eval(_FLUSH, len(keys), *keys, str(config_id), BATCH_TTL_SECONDS):
        return None
    send(TaskName.PLUGIN_EXPORT_EVENTS, config_id, batch_key, 1)
    return batch_key


def flush_due() -> int:
    """Flush every buffer whose time has come (the poller calls this)."""
    due = get_redis().zrangebyscore(DUE_KEY, 0, time.time())
    return sum(1 for config_id in due if flush(int(config_id)))


def export_now(config_id: int, events: list[dict]) -> str:
    """Export these events as one batch at once (a dead-letter replay)."""
    batch_key = f"plugins:export-batch:{config_id}:{uuid.uuid4().hex}"
    pipe = get_redis().pipeline()
    pipe.rpush(batch_key, *[orjson.dumps(event) for event in events])
    pipe.expire(batch_key, BATCH_TTL_SECONDS)
    pipe.execute()
    send(TaskName.PLUGIN_EXPORT_EVENTS, config_id, batch_key, 1)
    return batch_key


def run_export_events(config_id: int, batch_key: str, attempt: int) -> RetryLater | None:
    """One attempt at exporting a batch, with the retry schedule of docs/contracts.md#plugin-api (the next attempt comes
    back, for the task to queue), then dead letters."""
    redis = get_redis()
    raw = redis.lrange(batch_key, 0, -1)
    if not raw:
        return None  # exported already (a redelivered message), or expired
    events = [orjson.loads(item) for item in raw]
    snapshot = registry.config_snapshot(config_id)
    if snapshot is None:
        _undeliverable(config_id, batch_key, events, "the plugin config is disabled or deleted")
        return None
    instance = registry.instance_for(snapshot)
    if instance is None or not instance.has("export_events"):
        _undeliverable(config_id, batch_key, events, "the plugin could not be set up or has no export_events")
        return None
    try:
        instance.method("export_events", events)
    except RetryError as exc:
        delay = next_delay(EXPORT_EVENTS_DELAYS, attempt)
        total = max_attempts(EXPORT_EVENTS_DELAYS)
        if delay is not None:
            instance.sink.system(
                "WARN",
                f"export_events asked for a retry (attempt {attempt} of {total}); next attempt in {delay:g} s: {exc}",
            )
            instance.sink.flush()
            return RetryLater((config_id, batch_key, attempt + 1), delay)
        _give_up(snapshot, instance, batch_key, events, exc, attempt)
        return None
    except Exception as exc:
        if is_outage(exc):
            raise
        _give_up(snapshot, instance, batch_key, events, exc, attempt)
        return None
    registry.record_success(snapshot)
    redis.delete(batch_key)
    return None


def _give_up(snapshot, instance, batch_key: str, events: list[dict], exc: BaseException, attempt: int) -> None:
    context = {"plugin_config_id": snapshot.id, "attempts": attempt}
    letter = dead_letter(snapshot.project_id, "export_events", exc, {"events": events}, context)
    instance.sink.system(
        "ERROR", f"export_events gave up after {attempt} attempt(s); {len(events)} events are dead letter {letter.pk}"
    )
    registry.record_failure(snapshot, exc, method="export_events", sink=instance.sink)
    get_redis().delete(batch_key)


def _undeliverable(config_id: int, batch_key: str, events: list[dict], reason: str) -> None:
    project_id = PluginConfig.objects.filter(pk=config_id).values_list("project_id", flat=True).first()
    if project_id is not None:
        dead_letter(
            project_id,
            "export_events",
            RuntimeError(reason),
            {"events": events},
            {"plugin_config_id": config_id, "attempts": 0},
        )
    logger.warning("export batch not delivered", plugin_config_id=config_id, reason=reason, events=len(events))
    get_redis().delete(batch_key)
