"""File export runs, in this process, against the session's ClickHouse and Redis: content, order,
filters, resume from the last committed chunk, cancel, failure mail, the lock, the clean-up."""

import csv
import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.utils import timezone

from bklog_app.exports.models import ExportJob, ExportStatus
from pipeline.exports import cleanup, control, files, state
from pipeline.exports.file_export import run_file_export
from pipeline.exports.lease import Lease, lock_name
from pipeline.exports.state import Next
from pipeline.exports.writers import COLUMNS
from tests.exports.conftest import BASE_MS, iso, keyset_order, make_export, read_jsonl, read_lines, store_events


@pytest.fixture(autouse=True)
def exports_dir(settings, tmp_path):
    settings.EXPORTS_DIR = str(tmp_path / "exports")
    return tmp_path / "exports"


def run_to_end(export_id: int, limit: int = 1000) -> int:
    """Run the export as its task would, again and again while it asks to; the number of runs."""
    for runs in range(1, limit):
        if run_file_export(export_id) is None:
            return runs
    raise AssertionError("the export never finished")


def export_path(job: ExportJob):
    job.refresh_from_db()
    return files.path_for(job.file_name)


def read_csv(path) -> list[list[str]]:
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_csv_export_holds_the_range_names_and_properties_asked_for_in_order(project):
    stored = store_events(project.id, 60)
    after, before = BASE_MS + 3_000, BASE_MS + 40_000
    job = make_export(
        project,
        after=datetime.fromtimestamp(after / 1000, tz=UTC),
        before=datetime.fromtimestamp(before / 1000, tz=UTC),
        events=["signed_up"],
        properties={"plan": "pro"},
    )
    assert run_to_end(job.pk) == 1
    expected = [
        row
        for row in keyset_order(stored)
        if after <= row.timestamp_ms < before and row.event == "signed_up" and row.properties["plan"] == "pro"
    ]
    lines = read_csv(export_path(job))
    assert lines[0] == list(COLUMNS)
    assert [line[0] for line in lines[1:]] == [str(row.uuid) for row in expected]
    first = dict(zip(COLUMNS, lines[1], strict=True))
    assert first["event"] == "signed_up"
    assert first["timestamp"] == iso(expected[0].timestamp_ms)
    assert first["created_at"] == iso(expected[0].created_at_ms)
    assert first["person_id"] == ""
    assert orjson.loads(first["properties"]) == expected[0].properties  # quotes and commas survive
    job.refresh_from_db()
    assert job.status == ExportStatus.SUCCEEDED
    assert job.rows_exported == len(expected) == job.estimated_rows
    assert job.progress == 100
    assert job.file_size == export_path(job).stat().st_size
    assert job.expires_at > timezone.now()


def test_jsonl_export_embeds_properties_as_objects(project):
    stored = store_events(project.id, 5, person_properties={"email": "a@example.com"})
    job = make_export(project, format="jsonl")
    run_to_end(job.pk)
    rows = read_jsonl(export_path(job))
    assert [row["uuid"] for row in rows] == [str(row.uuid) for row in keyset_order(stored)]
    assert rows[0]["properties"] == keyset_order(stored)[0].properties
    assert rows[0]["person_properties"] == {"email": "a@example.com"}
    assert rows[0]["person_id"] is None
    assert set(rows[0]) == set(COLUMNS)


def test_an_export_of_nothing_is_a_valid_file(project):
    csv_job, jsonl_job = make_export(project), make_export(project, format="jsonl")
    run_to_end(csv_job.pk)
    run_to_end(jsonl_job.pk)
    assert read_csv(export_path(csv_job)) == [list(COLUMNS)]
    assert read_lines(export_path(jsonl_job)) == []
    csv_job.refresh_from_db()
    assert (csv_job.status, csv_job.rows_exported) == (ExportStatus.SUCCEEDED, 0)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_resumed_chunk_after_chunk_equals_one_run_even_after_a_torn_write(project, settings, fmt):
    store_events(project.id, 95)
    whole = make_export(project, format=fmt)
    run_to_end(whole.pk)

    settings.EXPORT_CHUNK_ROWS = 10
    settings.EXPORT_SLICE_SECONDS = 0  # every run commits one chunk and hands over
    job = make_export(project, format=fmt)
    runs = 0
    while (outcome := run_file_export(job.pk)) is not None:
        assert outcome == Next()
        runs += 1
        # A run killed while writing leaves bytes after the last commit; the next run cuts them.
        with open(export_path(job), "ab") as f:
            f.write(b"\x1f\x8b half a member")
    assert runs >= 9
    job.refresh_from_db()
    assert (job.status, job.rows_exported, job.runs) == (ExportStatus.SUCCEEDED, 95, runs + 1)
    assert gzip.decompress(export_path(job).read_bytes()) == gzip.decompress(export_path(whole).read_bytes())


def test_a_lost_file_starts_the_export_again(project, settings):
    store_events(project.id, 30)
    settings.EXPORT_CHUNK_ROWS = 10
    settings.EXPORT_SLICE_SECONDS = 0
    job = make_export(project)
    assert run_file_export(job.pk) == Next()
    export_path(job).unlink()
    run_to_end(job.pk)
    job.refresh_from_db()
    assert job.rows_exported == 30
    assert len(read_csv(export_path(job))) == 31


def test_a_second_copy_waits_for_the_running_one_and_takes_over_if_it_dies(project):
    store_events(project.id, 3)
    job = make_export(project)
    lease = Lease.take(lock_name("file", job.pk), ttl=30)
    try:
        outcome = run_file_export(job.pk)
        assert outcome is not None and 1 < outcome.countdown <= 31
        assert run_file_export(job.pk) is None  # one copy waits; more copies leave it to that one
        job.refresh_from_db()
        assert job.status == ExportStatus.QUEUED  # untouched
    finally:
        lease.release()
    assert run_file_export(job.pk) is None
    job.refresh_from_db()
    assert job.status == ExportStatus.SUCCEEDED
    assert run_file_export(job.pk) is None  # a late copy finds nothing to do


def test_a_run_that_lost_its_lease_cannot_commit(project):
    job = make_export(project)
    assert state.claim(ExportJob, job.pk, "token-a") is not None
    assert state.claim(ExportJob, job.pk, "token-b") is not None  # the lock lapsed; another run took it
    assert not state.commit(ExportJob, job.pk, "token-a", rows_exported=5)
    assert state.commit(ExportJob, job.pk, "token-b", rows_exported=5)


def test_cancel_deletes_the_file_and_stops_the_run(project, settings):
    store_events(project.id, 30)
    settings.EXPORT_CHUNK_ROWS = 10
    settings.EXPORT_SLICE_SECONDS = 0
    job = make_export(project)
    assert run_file_export(job.pk) == Next()
    path = export_path(job)
    assert path.exists()
    control.cancel(job)
    assert not path.exists()
    assert run_file_export(job.pk) is None
    job.refresh_from_db()
    assert job.status == ExportStatus.CANCELLED
    with pytest.raises(control.InvalidTransition, match="cancelled"):
        control.resume(job)


def test_cancel_while_a_run_holds_the_export_leaves_the_file_to_that_run(project, settings):
    store_events(project.id, 30)
    settings.EXPORT_CHUNK_ROWS = 10
    settings.EXPORT_SLICE_SECONDS = 0
    job = make_export(project)
    run_file_export(job.pk)
    path = export_path(job)
    job.refresh_from_db()
    state.claim(ExportJob, job.pk, "other-run")
    lease = Lease.take(lock_name("file", job.pk))
    control.cancel(job)
    assert path.exists()
    lease.release()
    assert run_file_export(job.pk) is None  # the next run to hold it sees the cancel
    assert not path.exists()


def test_a_failed_export_is_mailed_to_its_requester_and_resumes(project, settings, mailoutbox, tmp_path):
    from tests.factories import make_user_with_key

    store_events(project.id, 12)
    user, _ = make_user_with_key(project.organization)
    user.email = "owner@example.com"
    user.save()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings.EXPORTS_DIR = str(blocker)
    job = make_export(project, user=user)
    assert run_file_export(job.pk) is None
    job.refresh_from_db()
    assert job.status == ExportStatus.FAILED
    assert "not-a-folder" in job.error
    assert job.progress == 0
    [mail] = mailoutbox
    assert mail.to == ["owner@example.com"]
    assert f"export {job.pk}" in mail.subject and "failed" in mail.subject
    assert job.error in mail.body
    assert f"/api/projects/{project.id}/exports/{job.pk}/resume/" in mail.body

    settings.EXPORTS_DIR = str(tmp_path / "fixed")
    control.resume(job)
    assert job.status == ExportStatus.QUEUED and job.error
    run_to_end(job.pk)
    job.refresh_from_db()
    assert (job.status, job.rows_exported, job.error) == (ExportStatus.SUCCEEDED, 12, "")
    assert len(read_csv(export_path(job))) == 13


def test_progress_counts_rows_read_against_the_estimate(project, settings):
    store_events(project.id, 40)
    settings.EXPORT_CHUNK_ROWS = 10
    settings.EXPORT_SLICE_SECONDS = 0
    job = make_export(project, properties={"plan": "pro"})  # 10 of the 40 match
    run_file_export(job.pk)
    job.refresh_from_db()
    assert job.estimated_rows == 10
    assert job.rows_scanned == 10
    assert 0 < job.progress < 100


def test_clean_up_deletes_expired_files_and_marks_the_exports_expired(project):
    store_events(project.id, 3)
    done, fresh = make_export(project), make_export(project)
    run_to_end(done.pk)
    run_to_end(fresh.pk)
    path = export_path(done)
    ExportJob.objects.filter(pk=done.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert cleanup.expire_exports() == 1
    done.refresh_from_db()
    fresh.refresh_from_db()
    assert done.status == ExportStatus.EXPIRED and not path.exists()
    assert fresh.status == ExportStatus.SUCCEEDED and export_path(fresh).exists()
    with pytest.raises(control.InvalidTransition):
        control.resume(done)


def test_stalled_exports_are_queued_again_once(project, settings):
    settings.EXPORT_STALL_SECONDS = 60
    old = timezone.now() - timedelta(seconds=120)
    stalled = make_export(project, status=ExportStatus.RUNNING, heartbeat_at=old)
    locked = make_export(project, status=ExportStatus.RUNNING, heartbeat_at=old)
    make_export(project, status=ExportStatus.RUNNING)  # alive
    make_export(project, status=ExportStatus.FAILED, heartbeat_at=old)  # waits for a resume
    lease = Lease.take(lock_name("file", locked.pk))
    try:
        assert cleanup.requeue_stalled() == 1
        assert cleanup.requeue_stalled() == 0  # its heartbeat was renewed by the requeue
    finally:
        lease.release()
    stalled.refresh_from_db()
    assert stalled.heartbeat_at > old


def test_csv_rows_parse_back_with_the_csv_module(tmp_path):
    from pipeline.exports.writers import write_member

    row = ("u", "e,v", 'd"q', '{"a":"x\\ny"}', BASE_MS, BASE_MS, "00000000-0000-0000-0000-000000000000", "{}", "")
    path = tmp_path / "one.csv.gz"
    with open(path, "wb") as f:
        assert write_member(f, "csv", [row], header=True, compresslevel=1) == 1
    lines = read_csv(path)
    assert lines[1][:3] == ["u", "e,v", 'd"q']
    assert orjson.loads(lines[1][6]) == {"a": "x\ny"}


def test_the_fast_timestamp_format_is_the_api_format():
    import random

    from pipeline.exports.writers import ms_to_iso as fast
    from pipeline.storage.events import ms_to_iso

    values = [0, 999, 86_399_999, 86_400_000, 951_782_400_123, 4_102_444_800_000, BASE_MS]
    values += [random.randrange(0, 4_102_444_800_000) for _ in range(5000)]
    assert [fast(v) for v in values] == [ms_to_iso(v) for v in values]
