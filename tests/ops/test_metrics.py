"""`/metrics` (docs/contracts.md#operations): every counter family, counted across processes, in Prometheus format."""

import time
import uuid

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.metrics import observe_plugin_call
from tests.factories import wait_for_events

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_view_and_status(client):
    before = scrape(client)
    client.get("/health")
    client.get("/health")
    client.get("/no-such-page")
    after = scrape(client)
    health = {"view": "health", "method": "GET", "status": "200"}
    assert (
        value(after, "bklog_http_requests_total", **health) - value(before, "bklog_http_requests_total", **health) == 2
    )
    unmatched = {"view": "unmatched", "method": "GET", "status": "404"}
    assert value(after, "bklog_http_requests_total", **unmatched) >= 1
    assert value(after, "bklog_http_request_duration_seconds_count", view="health") >= 2


def test_queue_depth_and_stores_are_read_at_scrape_time(client):
    samples = scrape(client)
    for queue in ("ingestion", "default", "scheduled", "async_export"):
        assert ("bklog_queue_depth", (("queue", queue),)) in samples
    assert value(samples, "bklog_scrape_source_up", source="redis") == 1
    assert value(samples, "bklog_scrape_source_up", source="database") == 1
    assert any(name == "bklog_disk_free_bytes" for name, _ in samples)


def test_database_connections_are_reported_on_postgresql(client):
    from django.db import connection

    samples = scrape(client)
    if connection.vendor == "postgresql":
        assert value(samples, "bklog_database_connections") >= 1
        assert value(samples, "bklog_database_max_connections") >= 1
    else:
        assert ("bklog_database_connections", ()) not in samples


def test_plugin_calls_are_observed_per_config_and_method(client):
    observe_plugin_call(41, "process_event", 0.002, failed=False)
    observe_plugin_call(41, "process_event", 0.3, failed=True)
    samples = scrape(client)
    labels = {"plugin_config_id": "41", "method": "process_event"}
    assert value(samples, "bklog_plugin_call_duration_seconds_count", **labels) == 2
    assert value(samples, "bklog_plugin_call_errors_total", **labels) == 1


def test_ingestion_counters_cover_the_worker_processes(client, project, celery_worker):
    before = scrape(client)
    events = [{"event": "metric", "distinct_id": "u", "uuid": str(uuid.uuid4())} for _ in range(7)]
    duplicate = dict(events[0])
    body = orjson.dumps({"api_key": project.api_token, "batch": [*events, duplicate]})
    assert client.post("/batch/", data=body, content_type="application/json").status_code == 200
    assert len(wait_for_events(project.id, 7)) == 7

    def moved(name: str) -> float:
        return value(scrape(client), name) - value(before, name)

    assert moved("bklog_events_received_total") == 8  # counted by this (web) process
    # Counted by the Celery pool processes, summed from their files by this process.
    deadline = time.monotonic() + 10
    while moved("bklog_events_ingested_total") < 7 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert moved("bklog_events_ingested_total") == 7
    assert moved("bklog_events_duplicate_total") == 1
    assert moved("bklog_clickhouse_insert_rows_total") >= 7
    assert moved("bklog_clickhouse_insert_duration_seconds_count") >= 1
    assert moved("bklog_ingestion_batch_duration_seconds_count") >= 1
    latest = value(scrape(client), "bklog_latest_ingested_event_timestamp_seconds")
    assert latest > 1_600_000_000
