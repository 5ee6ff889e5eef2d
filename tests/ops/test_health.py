"""Health endpoints, exactly as docs/contracts.md#operations states them, against the real stores."""

import time

import pytest

from pipeline.ingestion.status import LAST_INGESTED_KEY
from pipeline.queues import Queue
from pipeline.redis import get_redis

pytestmark = pytest.mark.django_db

ALL_OK = {"database": "ok", "redis": "ok", "clickhouse": "ok", "ingestion": "ok"}


@pytest.fixture
def own_redis_db(settings, servers):
    """A Redis database no worker consumes from, so the test owns the ingestion queue's depth."""
    settings.REDIS_URL = servers["redis"].url[:-1] + "11"
    get_redis().flushdb()
    yield get_redis()
    get_redis().flushdb()


def test_liveness_and_health_answer_without_dependencies(client, servers):
    clickhouse = servers["clickhouse"]
    clickhouse.stop()
    try:
        for path in ("/_health", "/health"):
            response = client.get(path)
            assert (response.status_code, response.json()) == (200, {"status": "ok"})
    finally:
        clickhouse.start()


def test_ready_when_every_dependency_answers(client, own_redis_db):
    response = client.get("/health/ready")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "checks": ALL_OK})


def test_ready_is_503_naming_clickhouse_while_it_is_stopped_and_200_once_back(client, own_redis_db, servers):
    clickhouse = servers["clickhouse"]
    clickhouse.stop()
    try:
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.json() == {"status": "error", "checks": {**ALL_OK, "clickhouse": "error"}}
    finally:
        clickhouse.start()
    response = client.get("/health/ready")
    assert (response.status_code, response.json()["checks"]) == (200, ALL_OK)


def test_ready_is_503_naming_redis_while_it_is_unreachable(client, settings):
    from devservers import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"] == {**ALL_OK, "redis": "error", "ingestion": "error"}


def test_ingestion_is_stale_only_when_events_wait_and_nothing_was_ingested_for_too_long(client, own_redis_db, settings):
    settings.HEALTHCHECK_MAX_STALE_SECONDS = 60
    # Nothing waiting: fine however long ago the last ingestion was.
    own_redis_db.set(LAST_INGESTED_KEY, f"{time.time() - 3600:.3f}")
    assert client.get("/health/ready").json()["checks"]["ingestion"] == "ok"
    # Events waiting and the last ingestion recent: fine.
    own_redis_db.lpush(Queue.INGESTION.value, b"{}")
    own_redis_db.set(LAST_INGESTED_KEY, f"{time.time() - 10:.3f}")
    assert client.get("/health/ready").json()["checks"]["ingestion"] == "ok"
    # Events waiting and nothing ingested for longer than HEALTHCHECK_MAX_STALE_SECONDS: error.
    own_redis_db.set(LAST_INGESTED_KEY, f"{time.time() - 120:.3f}")
    response = client.get("/health/ready")
    assert (response.status_code, response.json()["checks"]) == (503, {**ALL_OK, "ingestion": "error"})
    # Events waiting and never anything ingested: error too.
    own_redis_db.delete(LAST_INGESTED_KEY)
    assert client.get("/health/ready").json()["checks"]["ingestion"] == "error"
