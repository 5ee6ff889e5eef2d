"""A file export run: stream the range from ClickHouse chunk by chunk into a gzipped file.

One chunk = the next EXPORT_CHUNK_ROWS events after the cursor, streamed block by block from
ClickHouse straight into one gzip member, then fsynced and committed (cursor, counts, file
offset) in one conditional UPDATE. Memory holds one block of rows, whatever the export's size.

A run stops at a chunk boundary when: the range is done (succeeded); its slice of
EXPORT_SLICE_SECONDS is used up (the task queues a continuation); the export was cancelled
(the file is deleted); it lost its lease. A dependency outage propagates (the task retries);
any other error fails the export, keeps the committed part for a resume, and emails the
requester.
"""

import time
from collections.abc import Iterator

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from bklog_app.exports.models import ExportJob, ExportStatus
from pipeline.errors import is_outage
from pipeline.exports import files, state
from pipeline.exports.lease import Lease, lock_name, wait_for_lock
from pipeline.exports.notify import notify_failure
from pipeline.exports.ranges import Walk, event_range_for, properties_match
from pipeline.exports.state import Next
from pipeline.exports.writers import write_member
from pipeline.storage.exports import count_rows, stream_chunk

logger = structlog.get_logger(__name__)

KIND = "file"


def run_file_export(export_id: int) -> Next | None:
    """One run of the export; a `Next` when a task should run it again (continue or wait)."""
    lease = Lease.take(lock_name(KIND, export_id))
    if lease is None:
        return wait_for_holder(export_id)
    try:
        return _run(export_id, lease)
    finally:
        lease.release()


def wait_for_holder(export_id: int) -> Next | None:
    """Another run holds the export. Check again when its lock would lapse, so that this copy
    takes over if that run died; stop once the export is no longer queued or running, or when
    another copy is already waiting."""
    if state.status_of(ExportJob, export_id) not in (ExportStatus.QUEUED, ExportStatus.RUNNING):
        return None
    countdown = wait_for_lock(lock_name(KIND, export_id))
    logger.info("export is being run elsewhere", export_id=export_id, check_again_in=countdown)
    return None if countdown is None else Next(countdown=countdown)


def resume_path(job: ExportJob) -> str:
    return f"/api/projects/{job.project_id}/exports/{job.pk}/resume/"


class _Chunk:
    """Counts what one chunk read, and where it ended, while its rows stream by."""

    def __init__(self, cursor: tuple[int, str] | None):
        self.cursor = cursor
        self.scanned = 0

    def matching(self, rows: Iterator[tuple], wanted: dict) -> Iterator[tuple]:
        for row in rows:
            self.scanned += 1
            self.cursor = (row[4], row[0])  # (timestamp_ms, uuid): the keyset order
            if properties_match(row[3], wanted):
                yield row


def _run(export_id: int, lease: Lease) -> Next | None:
    job = state.claim(ExportJob, export_id, lease.token)
    if job is None:
        _discard_if_cancelled(export_id)
        return None
    log = logger.bind(export_id=export_id, project_id=job.project_id)
    try:
        return _export(job, lease, log)
    except SoftTimeLimitExceeded:
        log.warning("export run reached its time limit; continuing from its last committed chunk")
        return Next()
    except Exception as exc:
        if is_outage(exc):
            raise
        log.exception("export failed")
        _fail(job, lease.token, exc)
        return None


def _export(job: ExportJob, lease: Lease, log) -> Next | None:
    token = lease.token
    event_range = event_range_for(job)
    if job.estimated_rows is None:
        job.estimated_rows = count_rows(event_range)
        state.commit(ExportJob, job.pk, token, estimated_rows=job.estimated_rows)
    if not job.file_name:
        job.file_name = files.file_name_for(job.pk, job.project_id, job.format)
        state.commit(ExportJob, job.pk, token, file_name=job.file_name)
    fileobj, started_over = files.open_at(files.path_for(job.file_name), job.file_offset)
    with fileobj:
        if started_over:
            log.warning("the export's file is gone or cut short; starting the export again from the beginning")
            job.cursor_timestamp_ms, job.cursor_uuid = None, ""
            job.rows_exported = job.rows_scanned = job.file_offset = job.chunks_committed = 0
            state.commit(ExportJob, job.pk, token, cursor_timestamp_ms=None, cursor_uuid="", rows_exported=0,
                         rows_scanned=0, file_offset=0, chunks_committed=0)  # fmt: skip
        deadline = time.monotonic() + settings.EXPORT_SLICE_SECONDS
        walk = Walk.over(event_range, max(settings.EXPORT_CHUNK_ROWS, 1), job.estimated_rows)
        while True:
            if not lease.renew():
                log.warning("export lease lapsed; another run carries on")
                return None
            bound = walk.bound(job.cursor)
            chunk = _Chunk(job.cursor)
            rows = chunk.matching(stream_chunk(event_range, job.cursor, walk.limit, bound), job.properties)
            first = next(rows, None)
            if first is not None or job.file_offset == 0:  # the first member holds the CSV header
                job.rows_exported += write_member(
                    fileobj,
                    job.format,
                    _prepend(first, rows),
                    header=job.file_offset == 0,
                    compresslevel=settings.EXPORT_GZIP_LEVEL,
                )
                job.file_offset = fileobj.tell()
            job.rows_scanned += chunk.scanned
            job.chunks_committed += 1
            cursor = walk.after_chunk(job.cursor, bound, chunk.scanned, chunk.cursor)
            if cursor is not None:
                job.cursor_timestamp_ms, job.cursor_uuid = cursor
            committed = state.commit(
                ExportJob,
                job.pk,
                token,
                cursor_timestamp_ms=job.cursor_timestamp_ms,
                cursor_uuid=job.cursor_uuid,
                rows_exported=job.rows_exported,
                rows_scanned=job.rows_scanned,
                file_offset=job.file_offset,
                chunks_committed=job.chunks_committed,
            )
            if not committed:
                _discard_if_cancelled(job.pk)
                log.info("export stopped: no longer running under this run", status=state.status_of(ExportJob, job.pk))
                return None
            if cursor is None:
                return _succeed(job, token, job.file_offset)
            if time.monotonic() >= deadline:
                log.info("export slice used up; a fresh task continues", rows_exported=job.rows_exported)
                return Next()
            if settings.EXPORT_CHUNK_DELAY_SECONDS > 0:
                time.sleep(settings.EXPORT_CHUNK_DELAY_SECONDS)


def _prepend(first: tuple | None, rest: Iterator[tuple]) -> Iterator[tuple]:
    if first is not None:
        yield first
        yield from rest


def _succeed(job: ExportJob, token: str, size: int) -> None:
    state.finish(
        ExportJob,
        job.pk,
        token,
        ExportStatus.SUCCEEDED,
        file_size=size,
        estimated_rows=job.rows_exported,
        expires_at=state.link_expiry(),
    )
    logger.info("export succeeded", export_id=job.pk, rows=job.rows_exported, bytes=size)


def _fail(job: ExportJob, token: str, exc: BaseException) -> None:
    error = state.failure_message(exc)
    if not state.finish(ExportJob, job.pk, token, ExportStatus.FAILED, error=error, expires_at=state.link_expiry()):
        return
    job = ExportJob.objects.select_related("project", "requested_by").get(pk=job.pk)
    notify_failure(job, "export", resume_path(job))


def _discard_if_cancelled(export_id: int) -> None:
    """A cancelled export keeps no file. Called by the run that holds the export's lease."""
    job = ExportJob.objects.filter(pk=export_id, status=ExportStatus.CANCELLED).first()
    if job is not None and job.file_name:
        files.remove(job.file_name)
