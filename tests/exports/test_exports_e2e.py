"""Exports end to end on real workers: the API starts them, workers on `async_export` run them,
a worker killed mid-export leaves an export that resumes to the same file, and a historical
export delivers stored events through a plugin once each, in order."""

import gzip
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from kombu import Connection

from bklog_app.exports.models import ExportJob, ExportStatus
from pipeline.exports import files
from pipeline.exports.tasks import run_file_export
from tests.exports.conftest import (
    START,
    cached_list,
    keyset_order,
    make_export,
    read_lines,
    sorted_hashes,
    store_events,
    wait_until,
)
from tests.factories import wait_for_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RANGE = {"after": START.isoformat(), "before": (START + timedelta(days=1)).isoformat()}


def finished(export_id: int) -> ExportJob | None:
    job = ExportJob.objects.get(pk=export_id)
    return job if job.status not in (ExportStatus.QUEUED, ExportStatus.RUNNING) else None


def test_an_export_started_over_the_api_runs_on_a_worker_and_downloads(api_client, project, celery_worker):
    stored = store_events(project.id, 250)
    response = api_client.post(f"/api/projects/{project.id}/exports/", {"format": "jsonl", **RANGE}, format="json")
    assert response.status_code == 201, response.content
    job = wait_until(lambda: finished(response.json()["id"]), message="the export to finish")
    assert job.status == ExportStatus.SUCCEEDED, job.error
    detail = api_client.get(f"/api/projects/{project.id}/exports/{job.pk}/").json()
    assert (detail["rows_exported"], detail["estimated_rows"], detail["progress"]) == (250, 250, 100)
    download = api_client.get(f"/api/projects/{project.id}/exports/{job.pk}/download/")
    assert download.status_code == 200
    lines = gzip.decompress(b"".join(download.streaming_content)).splitlines()
    assert [orjson.loads(line)["uuid"] for line in lines] == [str(row.uuid) for row in keyset_order(stored)]


def test_a_worker_killed_mid_export_resumes_to_the_same_rows_as_an_uninterrupted_export(
    api_client, project, servers, make_worker, celery_worker
):
    store_events(project.id, 3000, step_ms=10)
    # A worker of its own, on a broker database no other worker reads: it alone runs the export,
    # slowly (small chunks, a pause between them), with a lock that lapses soon after it dies.
    broker = servers["redis"].url[:-1] + "7"
    doomed = make_worker(
        "async_export",
        CELERY_BROKER_URL=broker,
        EXPORT_CHUNK_ROWS="100",
        EXPORT_CHUNK_DELAY_SECONDS="0.2",
        EXPORT_LOCK_TTL_SECONDS="3",
    )
    job = make_export(project)
    with Connection(broker) as connection:
        run_file_export.apply_async(args=[job.pk], connection=connection)
    wait_until(lambda: ExportJob.objects.get(pk=job.pk).chunks_committed >= 3, message="three committed chunks")
    doomed.kill()
    job.refresh_from_db()
    assert job.status == ExportStatus.RUNNING
    assert 0 < job.rows_exported < 3000

    response = api_client.post(f"/api/projects/{project.id}/exports/{job.pk}/resume/")
    assert response.status_code == 200, response.content
    resumed = wait_until(lambda: finished(job.pk), timeout=90, message="the resumed export to finish")
    assert resumed.status == ExportStatus.SUCCEEDED, resumed.error
    assert resumed.runs >= 2
    assert resumed.rows_exported == 3000

    response = api_client.post(f"/api/projects/{project.id}/exports/", {"format": "csv", **RANGE}, format="json")
    reference = wait_until(lambda: finished(response.json()["id"]), message="the uninterrupted export")
    assert reference.status == ExportStatus.SUCCEEDED, reference.error
    resumed_lines = read_lines(files.path_for(resumed.file_name))
    reference_lines = read_lines(files.path_for(reference.file_name))
    assert len(resumed_lines) == 3001
    assert sorted_hashes(resumed_lines) == sorted_hashes(reference_lines)
    assert resumed_lines == reference_lines  # the same order, too


def test_a_historical_export_delivers_every_stored_event_of_the_range_once_in_order(
    client, api_client, project, celery_worker, install_plugin
):
    now = datetime.now(UTC).replace(microsecond=0)
    after, before = now - timedelta(hours=3), now - timedelta(hours=1)

    def captured(at: datetime, n: int) -> dict:
        return {"event": f"e{n % 3}", "distinct_id": f"user-{n % 4}", "uuid": str(uuid.uuid4()),
                "timestamp": at.isoformat(), "properties": {"n": n}}  # fmt: skip

    # Same-second neighbours, so that the uuid decides part of the order.
    inside = [captured(after + timedelta(seconds=n // 2 * 37), n) for n in range(40)]
    outside = [captured(after - timedelta(minutes=5), 100), captured(before, 101)]
    body = {"api_key": project.api_token, "batch": [*inside, *outside]}
    response = client.post("/batch/", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 200
    stored = wait_for_events(project.id, len(inside) + len(outside), timeout=60)
    assert len(stored) == 42

    plugin, config = install_plugin(
        """
        def export_events(events, meta):
            historical = [e for e in events if e["properties"].get("$$is_historical_export_event") is True]
            if historical:
                meta.cache.lpush("historical", [e["uuid"] for e in historical])
        """
    )
    response = api_client.post(
        f"/api/projects/{project.id}/plugin_configs/{config['id']}/historical_exports/",
        {"after": after.isoformat(), "before": before.isoformat()},
        format="json",
    )
    assert response.status_code == 201, response.content
    path = f"/api/projects/{project.id}/plugin_configs/{config['id']}/historical_exports/{response.json()['id']}/"
    done = wait_until(
        lambda: (data := api_client.get(path).json())["status"] not in ("queued", "running") and data,
        message="the historical export to finish",
    )
    assert done["status"] == "succeeded", done["error"]
    assert (done["rows_exported"], done["progress"]) == (40, 100)

    expected = [e["uuid"] for e in sorted(stored, key=lambda e: (e["timestamp"], e["uuid"])) if e["uuid"] in
                {i["uuid"] for i in inside}]  # fmt: skip
    delivered = cached_list(plugin["id"], project.id, "historical")
    assert delivered == expected
