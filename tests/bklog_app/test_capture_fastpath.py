"""The capture fast path (bklog_app/capture/fastpath.py) does what Django's middleware would
have done for a capture request, and leaves every other URL to Django. (Every capture contract
test also runs through it: tests/bklog_app/test_capture_api.py.)"""

import logging

import orjson
import pytest

from bklog_app.capture import fastpath
from pipeline.queues import Queue
from pipeline.redis import get_redis
from tests.fastpath_client import FastPathClient
from tests.ops.test_metrics import scrape, value

pytestmark = pytest.mark.django_db


@pytest.fixture
def fast():
    get_redis().delete(Queue.INGESTION.value)
    yield FastPathClient()
    get_redis().delete(Queue.INGESTION.value)


def post_event(client, token: str, **headers):
    body = orjson.dumps({"api_key": token, "event": "clicked", "distinct_id": "u1"})
    return client.post("/e/", data=body, content_type="application/json", headers=headers)


def test_request_id_content_length_and_nosniff(fast, project):
    echoed = post_event(fast, project.api_token, **{"X-Request-Id": "req-fast-1"})
    assert echoed.status_code == 200 and echoed.json() == {"status": 1}
    assert echoed["X-Request-Id"] == "req-fast-1"
    assert echoed["X-Content-Type-Options"] == "nosniff"
    assert echoed["Content-Length"] == str(len(echoed.content))  # keep-alive clients need it
    made = post_event(fast, project.api_token)
    assert len(made["X-Request-Id"]) == 32


def test_capture_requests_are_counted_under_the_capture_view(fast, client, project):
    before = scrape(client)
    post_event(fast, project.api_token)
    post_event(fast, "phc_no_such_token")
    after = scrape(client)

    def delta(**labels) -> float:
        name = "bklog_http_requests_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta(view="capture", method="POST", status="200") == 1
    assert delta(view="capture", method="POST", status="401") == 1


def test_an_unexpected_error_is_a_json_500_with_the_request_id(fast, project, monkeypatch, caplog):
    def broken(request, endpoint):
        raise RuntimeError("boom")

    monkeypatch.setattr(fastpath, "answer", broken)
    with caplog.at_level(logging.ERROR):
        response = post_event(fast, project.api_token, **{"X-Request-Id": "req-boom"})
    assert response.status_code == 500
    assert response.json()["type"] == "server_error" and "Retry later" in response.json()["detail"]
    assert response["X-Request-Id"] == "req-boom"
    assert "capture request failed" in caplog.text


def test_other_urls_go_through_django(fast):
    response = fast.get("/no-such-page", headers={"X-Request-Id": "req-django"})
    assert response.status_code == 404
    assert response["X-Request-Id"] == "req-django"
    assert response.json()["code"] == "not_found"
    assert fast.get("/_health").status_code == 200
