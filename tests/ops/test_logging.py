"""One log format for every process (issue 6 point 8): LOG_FORMAT=json gives one JSON object per
line, with the request id on web lines and the task id on worker lines."""

import json
import uuid

import orjson
import pytest
from kombu import Connection

from pipeline.ingestion.tasks import ingest_batch
from tests.conftest import process_env
from tests.factories import wait_for_events
from tests.ops.processes import NO_PROXY, GunicornProcess, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return parsed


def test_web_lines_are_json_with_the_request_id(test_database_url):
    import urllib.request

    web = GunicornProcess(process_env(test_database_url, LOG_FORMAT="json", LOG_LEVEL="INFO",
                                      CONSUL_ENABLED="false")).start()  # fmt: skip
    try:
        # A capture request gets no access line (GUNICORN_ACCESSLOG_CAPTURE is off): sent first,
        # so its line would be written before the 404's, which is waited for below.
        capture = urllib.request.Request(
            f"{web.url}/e/", data=b"{}", headers={"X-Request-Id": "req-4710", "Content-Type": "application/json"}
        )
        try:
            NO_PROXY.open(capture, timeout=5)
        except urllib.error.HTTPError as error:
            assert error.code == 401 and error.headers["X-Request-Id"] == "req-4710"  # no api_key
        request = urllib.request.Request(f"{web.url}/no-such-page", headers={"X-Request-Id": "req-4711"})
        try:
            NO_PROXY.open(request, timeout=5)
        except urllib.error.HTTPError as error:
            assert error.code == 404
            assert error.headers["X-Request-Id"] == "req-4711"

        def django_line():
            lines = json_lines(web.log.read_text())
            return [line for line in lines if line.get("logger") == "django.request"]

        [line] = wait_until(django_line, 10, "django.request log line")
        assert line["request_id"] == "req-4711"
        assert line["level"] == "warning" and line["timestamp"]

        def access_line_of_the_request():
            lines = json_lines(web.log.read_text())
            return [x for x in lines if x.get("logger") == "gunicorn.access" and "request_id=req-4711" in x["event"]]

        [access] = wait_until(access_line_of_the_request, 10, "access line of the request")
        assert '"GET /no-such-page HTTP/1.1" 404' in access["event"]
        access_lines = [x for x in json_lines(web.log.read_text()) if x.get("logger") == "gunicorn.access"]
        assert not [x for x in access_lines if "req-4710" in x["event"]]
    finally:
        web.stop()
    # Gunicorn's own start and stop lines are JSON too.
    assert any(line.get("logger") == "gunicorn.error" for line in json_lines(web.log.read_text()))


def test_worker_lines_are_json_with_the_task_id(project, servers, make_worker):
    broker = servers["redis"].url[:-1] + "12"  # a broker database of its own
    worker = make_worker("ingestion", CELERY_BROKER_URL=broker, LOG_FORMAT="json", LOG_LEVEL="INFO")
    events = [{"event": "logged", "distinct_id": "u", "uuid": str(uuid.uuid4())}]
    with Connection(broker) as connection:
        result = ingest_batch.apply_async(
            kwargs={"token": project.api_token, "project_id": project.id, "events": events, "ip": None,
                    "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None},
            connection=connection,
        )  # fmt: skip
    assert len(wait_for_events(project.id, 1)) == 1
    lines = wait_until(
        lambda: [x for x in json_lines(worker.log.read_text()) if x.get("event") == "ingested batch"],
        10,
        "ingested batch line",
    )
    # celery-batches runs the gathered messages as one task of its own: its id is on the line.
    assert uuid.UUID(lines[0]["task_id"]) and lines[0]["task_id"] != result.id
    assert lines[0]["task"] == "bklog.ingestion.ingest_batch"
    assert orjson.dumps(lines[0])  # plain JSON values only
