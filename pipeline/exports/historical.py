"""A historical export run: replay stored events of a range, in (timestamp, uuid) order, through
one plugin config's `export_events`, one batch at a time (docs/contracts.md#plugin-api and #exports).

The plugin is called through the plugin runtime (pipeline.plugins.registry: the config's live
instance, its time limit, log sink, error recording and auto-disable), with its retry rules
(pipeline.plugins.retries: `RetryError` -> up to 3 more attempts after 6, 12 and 24 s). Order
matters here, so a batch is retried by this export itself (the task comes back after the delay
and sends the same batch again) and no later batch is sent before it. A batch that still fails
after the last attempt, or raises anything else, fails the export at that batch: nothing after it
was sent, and a resume sends that batch again. The cursor is committed after each delivered
batch, so a run that dies after `export_events` returned but before the commit sends that one
batch again on resume (at least once, like every delivery here; events carry their uuid).

Each event is a stored event as `export_events` receives it (pipeline.plugins.events) with
`properties["$$is_historical_export_event"] = True`. Events named in the config's
`export_events_to_ignore` are skipped, as in live exports.
"""

import time

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from bklog_app.exports.models import ExportStatus, HistoricalExport
from pipeline.errors import is_outage
from pipeline.exports import state
from pipeline.exports.lease import Lease, lock_name, wait_for_lock
from pipeline.exports.notify import notify_failure
from pipeline.exports.ranges import Walk, event_range_for
from pipeline.exports.state import Next
from pipeline.plugins import registry
from pipeline.plugins.api import RetryError
from pipeline.plugins.events import plugin_event
from pipeline.plugins.retries import EXPORT_EVENTS_DELAYS, max_attempts, next_delay
from pipeline.storage.events import iter_rows_as_events
from pipeline.storage.exports import count_rows, fetch_chunk

logger = structlog.get_logger(__name__)

KIND = "historical"
HISTORICAL_FLAG = "$$is_historical_export_event"


class ExportFailed(Exception):
    """The export cannot go on; the message says why and what to do."""


def run_historical_export(export_id: int) -> Next | None:
    lease = Lease.take(lock_name(KIND, export_id))
    if lease is None:  # another run holds it: wait for it as file exports do
        if state.status_of(HistoricalExport, export_id) not in (ExportStatus.QUEUED, ExportStatus.RUNNING):
            return None
        countdown = wait_for_lock(lock_name(KIND, export_id))
        return None if countdown is None else Next(countdown=countdown)
    try:
        return _run(export_id, lease)
    finally:
        lease.release()


def resume_path(job: HistoricalExport) -> str:
    return f"/api/projects/{job.project_id}/plugin_configs/{job.plugin_config_id}/historical_exports/{job.pk}/resume/"


def historical_events(rows: list[tuple], team_id: int, ignore: frozenset[str]) -> list[dict]:
    events = []
    for stored in iter_rows_as_events(rows):
        if stored["event"] in ignore:
            continue
        event = plugin_event({**stored, "team_id": team_id})
        event["properties"] = {**event["properties"], HISTORICAL_FLAG: True}
        events.append(event)
    return events


def _run(export_id: int, lease: Lease) -> Next | None:
    job = state.claim(HistoricalExport, export_id, lease.token)
    if job is None:
        return None
    log = logger.bind(historical_export_id=export_id, plugin_config_id=job.plugin_config_id)
    try:
        return _export(job, lease, log)
    except SoftTimeLimitExceeded:
        log.warning("historical export run reached its time limit; continuing from its last committed batch")
        return Next()
    except Exception as exc:
        if is_outage(exc):
            raise
        if not isinstance(exc, ExportFailed):
            log.exception("historical export failed")
        _fail(job, lease.token, exc)
        return None


def _export(job: HistoricalExport, lease: Lease, log) -> Next | None:
    token = lease.token
    event_range = event_range_for(job)
    if job.estimated_rows is None:
        job.estimated_rows = count_rows(event_range)
        state.commit(HistoricalExport, job.pk, token, estimated_rows=job.estimated_rows)
    deadline = time.monotonic() + settings.EXPORT_SLICE_SECONDS
    walk = Walk.over(event_range, max(settings.EXPORT_HISTORICAL_BATCH_ROWS, 1), job.estimated_rows)
    while True:
        if not lease.renew():
            log.warning("historical export lease lapsed; another run carries on")
            return None
        snapshot = registry.config_snapshot(job.plugin_config_id)
        if snapshot is None:
            raise ExportFailed(
                f"plugin config {job.plugin_config_id} is disabled or was deleted; enable it, then resume this export"
            )
        instance = registry.instance_for(snapshot)
        if instance is None or not instance.has("export_events"):
            raise ExportFailed(
                f"plugin config {job.plugin_config_id} could not be set up or has no export_events; see its logs "
                "and error, fix it, then resume this export"
            )
        bound = walk.bound(job.cursor)
        rows = fetch_chunk(event_range, job.cursor, walk.limit, bound)
        events = historical_events(rows, job.project_id, snapshot.export.ignore)
        if events:
            retry = _deliver(job, token, snapshot, instance, events)
            if retry is not None:
                return retry
        last = (rows[-1][4], rows[-1][0]) if rows else None
        cursor = walk.after_chunk(job.cursor, bound, len(rows), last)
        if cursor is not None:
            job.cursor_timestamp_ms, job.cursor_uuid = cursor
        job.rows_exported += len(events)
        job.rows_scanned += len(rows)
        job.chunks_committed += 1
        job.batch_attempt = 1
        committed = state.commit(
            HistoricalExport,
            job.pk,
            token,
            cursor_timestamp_ms=job.cursor_timestamp_ms,
            cursor_uuid=job.cursor_uuid,
            rows_exported=job.rows_exported,
            rows_scanned=job.rows_scanned,
            chunks_committed=job.chunks_committed,
            batch_attempt=1,
        )
        if not committed:
            log.info("historical export stopped", status=state.status_of(HistoricalExport, job.pk))
            return None
        if cursor is None:
            return _succeed(job, token)
        if time.monotonic() >= deadline:
            return Next()
        if settings.EXPORT_CHUNK_DELAY_SECONDS > 0:
            time.sleep(settings.EXPORT_CHUNK_DELAY_SECONDS)


def _deliver(job: HistoricalExport, token: str, snapshot, instance, events: list[dict]) -> Next | None:
    """One export_events call; a `Next` to try the same batch again later, per the retry rules."""
    attempt = job.batch_attempt
    try:
        instance.method("export_events", events)
    except RetryError as exc:
        delay = next_delay(EXPORT_EVENTS_DELAYS, attempt)
        total = max_attempts(EXPORT_EVENTS_DELAYS)
        if delay is None:
            registry.record_failure(snapshot, exc, method="export_events", sink=instance.sink)
            raise ExportFailed(
                f"export_events still asked for a retry after {attempt} attempts at the batch starting with event "
                f"{events[0]['uuid']}: {exc}. Resume this export to send that batch again."
            ) from exc
        instance.sink.system(
            "WARN",
            f"historical export {job.pk}: export_events asked for a retry (attempt {attempt} of {total}); "
            f"next attempt in {delay:g} s: {exc}",
        )
        instance.sink.flush()
        state.commit(HistoricalExport, job.pk, token, batch_attempt=attempt + 1)
        return Next(countdown=delay)
    except Exception as exc:
        if is_outage(exc):
            raise
        registry.record_failure(snapshot, exc, method="export_events", sink=instance.sink)
        raise ExportFailed(
            f"export_events failed at the batch starting with event {events[0]['uuid']}: {type(exc).__name__}: "
            f"{exc}. Fix the plugin, then resume this export to send that batch again."
        ) from exc
    registry.record_success(snapshot)
    return None


def _succeed(job: HistoricalExport, token: str) -> None:
    state.finish(HistoricalExport, job.pk, token, ExportStatus.SUCCEEDED, estimated_rows=job.rows_exported)
    logger.info("historical export succeeded", historical_export_id=job.pk, events=job.rows_exported)


def _fail(job: HistoricalExport, token: str, exc: BaseException) -> None:
    error = str(exc) if isinstance(exc, ExportFailed) else state.failure_message(exc)
    if not state.finish(HistoricalExport, job.pk, token, ExportStatus.FAILED, error=error):
        return
    job = HistoricalExport.objects.select_related("project", "requested_by").get(pk=job.pk)
    notify_failure(job, "historical export", resume_path(job))
