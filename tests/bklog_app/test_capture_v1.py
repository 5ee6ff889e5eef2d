"""PostHog's Capture v1 protocol (`POST /i/v1/analytics/events`): headers, body, per-event verdicts
and refusals with their exact bodies, up to the queue; and the real posthog-python client in v1
mode against a live server, up to ClickHouse."""

import gzip
import uuid
import zlib

import orjson
import pytest
import structlog
from posthog import Posthog

from bklog_app.capture.capture_v1 import ERROR_URI
from pipeline.ingestion.projects import forget
from pipeline.queues import Queue
from pipeline.redis import get_redis
from tests.bklog_app.test_capture_api import queued_messages
from tests.conftest import process_env
from tests.factories import wait_for_events
from tests.ops.processes import GunicornProcess

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_ingestion_queue")]

PATH = "/i/v1/analytics/events"
REQUEST_ID = "4f0e7c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
SENT_AT = "2026-03-19T14:30:00Z"


def v1_event(**fields) -> dict:
    return {
        "event": "clicked",
        "uuid": str(uuid.uuid4()),
        "distinct_id": "user-1",
        "timestamp": "2026-03-19T14:29:58.123Z",
        "options": {},
        "properties": {"a": 1},
        **fields,
    }


def headers(token: str, **overrides: str | None) -> dict:
    sent = {
        "Authorization": f"Bearer {token}",
        "PostHog-Sdk-Info": "posthog-rs/1.2.3",
        "PostHog-Attempt": "1",
        "PostHog-Request-Id": REQUEST_ID,
        "PostHog-Request-Timestamp": SENT_AT,
        "User-Agent": "test-agent/1.0",
        **overrides,
    }
    return {name: value for name, value in sent.items() if value is not None}


def post(client, token: str, body, *, content_type: str = "application/json", **header_overrides):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    if not data:  # Django's test client sends no Content-Type with an empty body; SDKs do
        header_overrides.setdefault("Content-Type", content_type)
    return client.post(PATH, data=data, content_type=content_type, headers=headers(token, **header_overrides))


def batch(*events: dict) -> dict:
    return {"created_at": "2026-03-19T14:30:00.000Z", "batch": list(events)}


def refused(error: str, description: str) -> dict:
    return {"error": error, "error_description": description, "error_uri": ERROR_URI}


def queued_events() -> list[dict]:
    return [event for message in queued_messages() for event in message["events"]]


# --- Accepted ------------------------------------------------------------------------------


def test_a_batch_is_queued_and_each_event_answered_ok_by_uuid(client, project):
    events = [v1_event(), v1_event(event="$pageview", session_id="s-1", window_id="w-1")]
    response = post(client, project.api_token, batch(*events))
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert "Retry-After" not in response
    assert response.json() == {"results": {e["uuid"]: {"result": "ok"} for e in events}}

    (message,) = queued_messages()
    assert message["token"] == project.api_token
    assert message["sent_at"] == SENT_AT
    first, second = message["events"]
    assert first == {
        "event": "clicked",
        "uuid": events[0]["uuid"],
        "distinct_id": "user-1",
        "timestamp": "2026-03-19T14:29:58.123Z",
        "properties": {"a": 1, "$lib": "posthog-rs", "$lib_version": "1.2.3"},
    }
    assert second["properties"]["$session_id"] == "s-1"
    assert second["properties"]["$window_id"] == "w-1"


def test_trailing_slash(client, project):
    assert post(client, project.api_token, batch(v1_event())).status_code == 200
    response = client.post(
        PATH + "/", data=orjson.dumps(batch(v1_event())), content_type="application/json",
        headers=headers(project.api_token),
    )  # fmt: skip
    assert response.status_code == 200


@pytest.mark.parametrize(
    "encoding, compress",
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", lambda data: zlib.compress(data, wbits=-15))],
    ids=["gzip", "deflate zlib", "deflate raw"],
)
def test_compressed_bodies(client, project, encoding, compress):
    event = v1_event()
    body = compress(orjson.dumps(batch(event)))
    response = post(client, project.api_token, body, **{"Content-Encoding": encoding})
    assert response.json() == {"results": {event["uuid"]: {"result": "ok"}}}
    assert [e["uuid"] for e in queued_events()] == [event["uuid"]]


def test_options_become_the_properties_ingestion_reads(client, project):
    options = {"cookieless_mode": "true", "disable_skew_correction": 1, "process_person_profile": False,
               "product_tour_id": 42}  # fmt: skip
    response = post(client, project.api_token, batch(v1_event(options=options)))
    assert response.status_code == 200
    (event,) = queued_events()
    assert event["properties"] == {
        "a": 1,
        "$cookieless_mode": True,
        "$ignore_sent_at": True,
        "$process_person_profile": False,
        "$product_tour_id": "42",
        "$lib": "posthog-rs",
        "$lib_version": "1.2.3",
    }


def test_sdk_info_without_a_version_adds_no_lib(client, project):
    post(client, project.api_token, batch(v1_event()), **{"PostHog-Sdk-Info": "no-version"})
    (event,) = queued_events()
    assert event["properties"] == {"a": 1}


def test_known_bad_distinct_id_is_stored_with_person_processing_off_and_a_warning(client, project):
    event = v1_event(distinct_id="undefined")
    response = post(client, project.api_token, batch(event))
    assert response.json() == {
        "results": {event["uuid"]: {"result": "warning", "details": "person_processing_disabled"}}
    }
    (queued,) = queued_events()
    assert queued["properties"]["$process_person_profile"] is False


# --- One event dropped, the rest accepted --------------------------------------------------


@pytest.mark.parametrize(
    "fields, details",
    [
        ({"event": ""}, "missing_event_name"),
        ({"event": "x" * 201}, "event_name_too_long"),
        ({"event": "$performance_event"}, "dropped_performance_event"),
        ({"distinct_id": "   "}, "missing_distinct_id"),
        ({"distinct_id": "d" * 201}, "distinct_id_too_large"),
        ({"timestamp": "yesterday"}, "invalid_event_timestamp"),
        ({"timestamp": "2026-03-19T14:29:58"}, "invalid_event_timestamp"),
        ({"properties": [1, 2]}, "malformed_event_properties"),
        ({"properties": None}, "malformed_event_properties"),
        ({"options": {"cookieless_mode": "maybe"}}, "invalid_options"),
        ({"options": {"product_tour_id": [1]}}, "invalid_options"),
        ({"options": "fast"}, "invalid_options"),
    ],
)
def test_a_bad_event_is_dropped_with_its_reason_and_the_rest_queued(client, project, fields, details):
    good, bad = v1_event(), v1_event(**fields)
    response = post(client, project.api_token, batch(good, bad))
    assert response.status_code == 200
    assert response.json() == {
        "results": {good["uuid"]: {"result": "ok"}, bad["uuid"]: {"result": "drop", "details": details}}
    }
    assert [e["uuid"] for e in queued_events()] == [good["uuid"]]


def test_all_dropped_is_200_and_nothing_queued(client, project):
    event = v1_event(event="")
    response = post(client, project.api_token, batch(event))
    assert response.json() == {"results": {event["uuid"]: {"result": "drop", "details": "missing_event_name"}}}
    assert queued_messages() == []


def test_all_dropped_still_needs_a_known_token(client, project):
    response = post(client, "phc_unknown", batch(v1_event(event="")))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_api_token"


# --- The request refused whole -------------------------------------------------------------


EVENT_UUID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"


@pytest.mark.parametrize(
    "body, status, error, description",
    [
        (b"", 400, "empty_body", "The request body is empty."),
        (b"{not json", 400, "request_parsing_error", "The body is neither JSON nor base64-encoded JSON."),
        (b"[1]", 400, "request_parsing_error",
         'The body must be a JSON object: {"created_at": ..., "batch": [...]}.'),
        ({"batch": [v1_event()]}, 400, "request_parsing_error", "'created_at' is missing or not a string."),
        ({"created_at": "now", "batch": [v1_event()]}, 400, "invalid_batch",
         "created_at is not valid RFC 3339: 'now'."),
        ({"created_at": "2026-03-19T14:30:00Z"}, 400, "request_parsing_error", "'batch' is missing or not a list."),
        (batch(), 400, "empty_batch", "The batch holds no events."),
        (batch("event"), 400, "request_parsing_error", "Event 0 is not a JSON object."),
        (batch(v1_event(), {k: v for k, v in v1_event().items() if k != "distinct_id"}), 400,
         "request_parsing_error", "Event 1: 'distinct_id' is missing or not a string."),
        (batch(v1_event(timestamp=1710858598)), 400, "request_parsing_error",
         "Event 0: 'timestamp' is missing or not a string."),
        (batch(v1_event(session_id=7)), 400, "request_parsing_error", "Event 0: 'session_id' is not a string."),
        (batch(v1_event(uuid=" ")), 400, "missing_event_uuid", "Event 0 has an empty uuid."),
        (batch(v1_event(uuid="not-a-uuid")), 400, "invalid_event_uuid",
         "Event 0: uuid is not a valid UUID: 'not-a-uuid'."),
        (batch(v1_event(uuid=EVENT_UUID), v1_event(uuid=EVENT_UUID.upper())), 400, "duplicate_event_uuid",
         f"Event 1: uuid {EVENT_UUID} appears twice in the batch."),
    ],
)  # fmt: skip
def test_unreadable_requests_are_refused_whole(client, project, body, status, error, description):
    response = post(client, project.api_token, body)
    assert response.status_code == status
    assert response.json() == refused(error, description)
    assert queued_messages() == []


@pytest.mark.parametrize(
    "overrides, status, error, description",
    [
        ({"Authorization": None}, 401, "missing_authorization",
         "Send the project token as 'Authorization: Bearer <token>'."),
        ({"Authorization": "Basic cGhjOg=="}, 400, "invalid_header_value", "Authorization must use the Bearer scheme."),
        ({"Authorization": "Bearer  "}, 401, "invalid_api_token", "The Bearer token is empty."),
        ({"PostHog-Sdk-Info": None, "User-Agent": None}, 400, "missing_required_headers",
         "The request is missing required headers: ['PostHog-Sdk-Info', 'User-Agent']."),
        ({"PostHog-Request-Id": "req-1"}, 400, "invalid_header_value",
         "PostHog-Request-Id is not a valid UUID: 'req-1'."),
        ({"PostHog-Attempt": "0"}, 400, "invalid_header_value", "PostHog-Attempt must be a positive integer: '0'."),
        ({"PostHog-Attempt": "two"}, 400, "invalid_header_value",
         "PostHog-Attempt must be a positive integer: 'two'."),
        ({"PostHog-Request-Timestamp": "12:00"}, 400, "invalid_header_value",
         "PostHog-Request-Timestamp is not RFC 3339: '12:00'."),
        ({"Content-Encoding": "br"}, 415, "unsupported_encoding",
         "Content-Encoding 'br' is not supported: use gzip or deflate."),
        ({"Content-Encoding": "gzip"}, 400, "request_decoding_error",
         "The body could not be gunzipped: Error -3 while decompressing data: incorrect header check."),
    ],
)  # fmt: skip
def test_bad_headers_are_refused(client, project, overrides, status, error, description):
    response = post(client, project.api_token, batch(v1_event()), **overrides)
    assert response.status_code == status
    assert response.json() == refused(error, description)
    assert queued_messages() == []


def test_content_type_must_be_json(client, project):
    response = post(client, project.api_token, batch(v1_event()), content_type="text/plain")
    assert response.status_code == 415
    assert response.json() == refused(
        "unsupported_content_type", "Content-Type must be application/json, not 'text/plain'."
    )


def test_unknown_token_is_401(client, project):
    response = post(client, "phc_unknown", batch(v1_event()))
    assert response.status_code == 401
    assert response.json() == refused(
        "invalid_api_token",
        "Project API key invalid. You can find your project API key in the project settings (GET /api/projects/).",
    )


def test_body_over_the_limit_is_413(client, project, settings):
    settings.CAPTURE_MAX_BATCH_BYTES = 1000
    response = post(client, project.api_token, batch(*[v1_event() for _ in range(10)]))
    assert response.status_code == 413
    assert response.json() == refused("payload_too_large", "The request body is larger than 1000 bytes.")


def test_a_gzip_bomb_is_413(client, project, settings):
    settings.CAPTURE_MAX_BATCH_BYTES = 1000
    bomb = gzip.compress(b" " * 20_000)
    response = post(client, project.api_token, bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_get_is_405(client, project):
    response = client.get(PATH, headers=headers(project.api_token))
    assert response.status_code == 405
    assert response.json() == refused("method_not_allowed", "Use POST.")


# --- Overload: retry later -----------------------------------------------------------------


def test_over_the_rate_limit_is_429_with_retry_after(client, project):
    project.rate_limit_per_minute = 3
    project.save()
    forget()
    assert post(client, project.api_token, batch(v1_event(), v1_event())).status_code == 200
    response = post(client, project.api_token, batch(v1_event(), v1_event()))
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json() == refused(
        "rate_limited",
        "This project is over its rate limit of 3 events per minute. Retry later, "
        "or ask an administrator to raise the project's rate limit.",
    )
    assert len(queued_messages()) == 1


def test_broker_down_is_503_with_retry_after_and_nothing_queued(client, project, servers):
    redis = servers["redis"]
    post(client, project.api_token, batch(v1_event()))  # the token is cached before Redis goes
    get_redis().delete(Queue.INGESTION.value)
    redis.stop()
    try:
        response = post(client, project.api_token, batch(v1_event()))
    finally:
        redis.start()
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    body = response.json()
    assert body["error"] == "service_unavailable" and "Retry later" in body["error_description"]
    assert queued_messages() == []
    assert post(client, project.api_token, batch(v1_event())).status_code == 200


# --- Request id, attempt, CORS -------------------------------------------------------------


def test_request_id_and_attempt_are_bound_to_the_log_context(client, project):
    with structlog.testing.capture_logs() as logs:
        response = post(client, project.api_token, batch(v1_event()), **{"PostHog-Attempt": "3"})
    assert response.status_code == 200
    assert structlog.contextvars.get_contextvars()["posthog_request_id"] == REQUEST_ID
    assert structlog.contextvars.get_contextvars()["posthog_attempt"] == 3
    assert [log["event"] for log in logs] == ["capture v1 request retried"]


def test_cors_preflight_allows_the_v1_headers(client, project):
    response = client.options(PATH, headers={"Origin": "https://app.example.com"})
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "https://app.example.com"
    allowed = {name.strip().lower() for name in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "content-encoding", "posthog-sdk-info", "posthog-attempt",
            "posthog-request-id", "posthog-request-timestamp"} <= allowed  # fmt: skip
    response = post(client, project.api_token, batch(v1_event()), Origin="https://app.example.com")
    assert response["Access-Control-Allow-Origin"] == "https://app.example.com"


# --- The real posthog-python client in v1 mode --------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("compression", ["none", "gzip", "deflate"])
def test_posthog_python_in_v1_mode_stores_its_events(live_server, project, celery_worker, compression):
    errors = []
    sdk = Posthog(project.api_token, host=live_server.url, capture_mode="v1", capture_compression=compression,
                  flush_at=20, flush_interval=0.2, max_retries=1,
                  on_error=lambda error, batch: errors.append(error))  # fmt: skip
    sent = [
        sdk.capture("v1_event", distinct_id=f"v1-user-{n % 3}", properties={"n": n, "$session_id": "s-9"})
        for n in range(30)
    ]
    dropped = sdk.capture("$performance_event", distinct_id="v1-user-0")
    sdk.flush()
    sdk.shutdown()

    stored = {row["uuid"]: row for row in wait_for_events(project.id, 30, event="v1_event")}
    assert set(stored) == {str(u) for u in sent}
    row = stored[str(sent[4])]
    assert row["distinct_id"] == "v1-user-1"
    assert row["properties"]["n"] == 4
    assert row["properties"]["$session_id"] == "s-9"
    assert row["properties"]["$lib"] == "posthog-python"
    # The server's verdict reaches the client: the one dropped event, with its reason.
    assert [error.drops for error in errors] == [[(str(dropped), "dropped_performance_event")]]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_posthog_python_in_v1_mode_through_gunicorn(test_database_url, project, celery_worker):
    """Gunicorn serves the WSGI application whose fast path takes PostHog's v0 paths; v1 goes on to Django."""
    web = GunicornProcess(process_env(test_database_url, CONSUL_ENABLED="false")).start()
    try:
        sdk = Posthog(project.api_token, host=web.url, capture_mode="v1", capture_compression="gzip", flush_at=10,
                      flush_interval=0.2, max_retries=1)  # fmt: skip
        sent = {
            str(sdk.capture("v1_through_gunicorn", distinct_id=f"g-{n % 4}", properties={"n": n})) for n in range(25)
        }
        sdk.flush()
        sdk.shutdown()
    finally:
        web.stop()
    stored = wait_for_events(project.id, 25, event="v1_through_gunicorn")
    assert {row["uuid"] for row in stored} == sent
