"""Capture through real Gunicorn (the fast path of bklog_app/capture/fastpath.py as it is
served): keep-alive connections carry request after request, and the real posthog SDK's events
are stored."""

import http.client

import orjson
import pytest
from posthog import Posthog

from tests.conftest import process_env
from tests.factories import wait_for_events
from tests.ops.processes import GunicornProcess

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def web(test_database_url):
    server = GunicornProcess(process_env(test_database_url, CONSUL_ENABLED="false")).start()
    yield server
    server.stop()


def test_keep_alive_connection_carries_many_capture_requests(web, project, celery_worker):
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    for n in range(5):
        body = orjson.dumps({"api_key": project.api_token, "event": "kept", "distinct_id": f"u{n}"})
        connection.request("POST", "/e/", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") is None
        assert int(response.getheader("Content-Length")) == len(response.read())
    connection.request("POST", "/e/", body=b"{not json", headers={"Content-Type": "application/json"})
    refused = connection.getresponse()
    assert refused.status == 400 and orjson.loads(refused.read())["code"] == "invalid_payload"
    connection.close()
    stored = wait_for_events(project.id, 5)
    assert sorted((e["event"], e["distinct_id"]) for e in stored) == [("kept", f"u{n}") for n in range(5)]


def test_posthog_sdk_through_gunicorn(web, project, celery_worker):
    sdk = Posthog(project.api_token, host=web.url, gzip=True, flush_at=20, flush_interval=0.2)
    for n in range(60):
        sdk.capture("sdk_through_gunicorn", distinct_id=f"user-{n % 5}", properties={"n": n})
    sdk.flush()
    sdk.shutdown()
    stored = wait_for_events(project.id, 60)
    assert len(stored) == 60
    assert {e["event"] for e in stored} == {"sdk_through_gunicorn"}
    assert sorted((e["properties"]["n"], e["distinct_id"]) for e in stored) == [(n, f"user-{n % 5}") for n in range(60)]
    assert {e["properties"]["$lib"] for e in stored} == {"posthog-python"}  # what the SDK adds, kept
    assert len({e["uuid"] for e in stored}) == 60
