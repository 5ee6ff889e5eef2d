"""Segment compatibility: the real `segment-analytics-python` client against a live server, and
analytics.js's requests (its short paths, `text/plain` bodies with the write key inside, CORS)
as the browser library sends them, up to the queue."""

import base64
from uuid import uuid5

import orjson
import pytest
from segment.analytics.client import Client

from bklog_app.capture.segment import MESSAGE_ID_NAMESPACE
from pipeline.ingestion.projects import forget
from pipeline.queues import Queue
from pipeline.redis import get_redis
from tests.bklog_app.test_capture_api import queued_messages
from tests.factories import wait_for_events

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_ingestion_queue")]

ORIGIN = "https://shop.example.com"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("gzip", [False, True])
def test_segment_client_messages_are_stored_with_the_mapping(live_server, project, celery_worker, gzip):
    errors = []
    client = Client(project.api_token, host=live_server.url, sync_mode=True, gzip=gzip, max_retries=1,
                    on_error=lambda error, items: errors.append(error))  # fmt: skip
    client.identify("user-1", {"email": "ada@example.com", "plan": "pro"}, anonymous_id="anon-1")
    client.track("user-1", "Order Completed", {"revenue": 42})
    client.track(anonymous_id="anon-2", event="Viewed")
    client.alias("anon-3", "user-1")
    client.group("user-1", "acme-inc", {"name": "Acme", "employees": 10})
    client.page("user-1", "Docs", "Getting started", {"url": "https://example.com/docs"})
    client.screen("user-1", "App", "Home")
    client.flush()
    assert errors == []

    stored = {e["event"]: e for e in wait_for_events(project.id, 7)}
    assert set(stored) == {
        "$identify",
        "Order Completed",
        "Viewed",
        "$create_alias",
        "$groupidentify",
        "$pageview",
        "$screen",
    }
    identify = stored["$identify"]
    assert identify["distinct_id"] == "user-1"
    assert identify["properties"]["$set"] == {"email": "ada@example.com", "plan": "pro"}
    assert identify["properties"]["$anon_distinct_id"] == "anon-1"
    assert stored["Order Completed"]["properties"]["revenue"] == 42
    assert stored["Viewed"]["distinct_id"] == "anon-2"
    assert stored["$create_alias"]["distinct_id"] == "user-1"
    assert stored["$create_alias"]["properties"]["alias"] == "anon-3"
    assert stored["$groupidentify"]["properties"]["$group_key"] == "acme-inc"
    assert stored["$pageview"]["properties"]["$current_url"] == "https://example.com/docs"
    assert stored["$screen"]["properties"]["$screen_name"] == "Home"
    assert stored["Order Completed"]["properties"]["$lib"] == "analytics-python"


def test_write_key_in_body_and_errors(client, project):
    body = {
        "writeKey": project.api_token,
        "batch": [{"type": "track", "event": "x", "userId": "u", "messageId": "m-1"}],
    }
    response = client.post("/v1/batch", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 200 and response.json() == {"success": True}
    body["writeKey"] = "wrong"
    response = client.post("/v1/batch", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 401 and response.json()["code"] == "invalid_api_key"
    body = {"writeKey": project.api_token, "batch": [{"type": "track", "event": "x"}]}
    response = client.post("/v1/batch", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 400 and response.json()["attr"] == "distinct_id"


# --- analytics.js (@segment/analytics-next) ------------------------------------------------


def browser_message(write_key: str, kind: str, **fields) -> dict:
    """A message as analytics.js's Segment.io plugin posts it (normalize.ts): the write key and
    sentAt inside, the page and user agent in its context."""
    return {
        "type": kind,
        "messageId": f"ajs-next-1767225600000-{kind}",
        "anonymousId": "anon-7",
        "userId": None,
        "timestamp": "2026-12-01T10:00:00.000Z",
        "sentAt": "2026-12-01T10:00:00.250Z",
        "writeKey": write_key,
        "integrations": {},
        "context": {
            "page": {"path": "/pricing", "referrer": "https://search.example/", "search": "?plan=pro",
                     "title": "Pricing", "url": "https://shop.example.com/pricing?plan=pro"},
            "userAgent": USER_AGENT,
            "locale": "en-GB",
            "library": {"name": "analytics.js", "version": "npm:next-1.81.0"},
        },
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
        **fields,
    }  # fmt: skip


def send(client, path: str, body: dict | bytes, **extra):
    """POST as the browser does: `text/plain`, Basic auth with the write key, from another origin."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    write_key = body.get("writeKey") if isinstance(body, dict) else None
    headers = {"Origin": ORIGIN, **extra}
    if write_key:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    return client.post(path, data=data, content_type="text/plain", headers=headers)


def queued_events() -> list[dict]:
    return [event for message in queued_messages() for event in message["events"]]


@pytest.mark.parametrize(
    "path, kind, fields, event_name",
    [
        ("/v1/t", "track", {"event": "Plan Chosen", "properties": {"plan": "pro"}}, "Plan Chosen"),
        ("/v1/i", "identify", {"userId": "user-7", "traits": {"email": "ada@example.com"}}, "$identify"),
        ("/v1/p", "page", {"name": "Pricing", "properties": {"path": "/pricing", "title": "Pricing",
                                                            "url": "https://shop.example.com/pricing?plan=pro"}},
         "$pageview"),
        ("/v1/a", "alias", {"userId": "user-7", "previousId": "anon-7"}, "$create_alias"),
        ("/v1/g", "group", {"groupId": "acme", "traits": {"name": "Acme"}}, "$groupidentify"),
        ("/v1/s", "screen", {"name": "Home"}, "$screen"),
    ],
)  # fmt: skip
def test_each_short_path_queues_its_message(client, project, path, kind, fields, event_name):
    message = browser_message(project.api_token, kind, **fields)
    response = send(client, path, message)
    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}
    assert response["Access-Control-Allow-Origin"] == ORIGIN

    (queued,) = queued_messages()
    assert queued["token"] == project.api_token
    assert queued["sent_at"] == "2026-12-01T10:00:00.250Z"
    (event,) = queued["events"]
    assert event["event"] == event_name
    assert event["uuid"] == str(uuid5(MESSAGE_ID_NAMESPACE, f"ajs-next-1767225600000-{kind}"))
    assert event["timestamp"] == "2026-12-01T10:00:00.000Z"
    assert event["distinct_id"] == fields.get("userId", "anon-7")
    properties = event["properties"]
    assert properties["$current_url"] == "https://shop.example.com/pricing?plan=pro"
    assert properties["$pathname"] == "/pricing"
    assert properties["$referrer"] == "https://search.example/"
    assert properties["$title"] == "Pricing"
    assert properties["$raw_user_agent"] == USER_AGENT
    assert properties["$lib"] == "analytics.js"
    assert properties["$lib_version"] == "npm:next-1.81.0"


def test_a_page_call_s_own_properties_come_before_its_context(client, project):
    message = browser_message(project.api_token, "page", properties={"url": "https://shop.example.com/a", "path": "/a"})
    send(client, "/v1/p", message)
    (event,) = queued_events()
    assert event["properties"]["$current_url"] == "https://shop.example.com/a"
    assert event["properties"]["$pathname"] == "/a"
    assert event["properties"]["$title"] == "Pricing"


def test_the_batched_path_queues_every_message_with_the_batch_s_sent_at(client, project):
    messages = [browser_message(project.api_token, "track", event=f"Step {n}", messageId=f"m-{n}") for n in range(3)]
    for message in messages:  # the batching dispatcher removes each message's sentAt
        del message["sentAt"]
    body = {"writeKey": project.api_token, "batch": messages, "sentAt": "2026-12-01T10:00:05.000Z"}
    response = send(client, "/v1/b", body)
    assert response.status_code == 200 and response.json() == {"success": True}
    (queued,) = queued_messages()
    assert queued["sent_at"] == "2026-12-01T10:00:05.000Z"
    assert [event["event"] for event in queued["events"]] == ["Step 0", "Step 1", "Step 2"]


def test_write_key_only_inside_the_body(client, project):
    body = orjson.dumps(browser_message(project.api_token, "track", event="Keyed"))
    response = client.post("/v1/t", data=body, content_type="text/plain")
    assert response.status_code == 200
    assert [event["event"] for event in queued_events()] == ["Keyed"]


def test_the_library_s_own_metrics_are_answered_and_not_kept(client, project):
    body = {"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1, "tags": {}}]}
    response = send(client, "/v1/m", body)
    assert response.status_code == 200 and response.json() == {"success": True}
    assert queued_messages() == []


def test_cors_preflight_allows_what_analytics_js_sends(client, project):
    response = client.options(
        "/v1/t",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type,x-retry-count"},
    )  # fmt: skip
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed = {name.strip().lower() for name in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count"} <= allowed


@pytest.mark.parametrize(
    "path, body, status, expected",
    [
        ("/v1/t", b"", 400, {"type": "validation_error", "code": "no_data", "attr": None, "detail":
         "No data found. Make sure to use a POST request when sending the payload in the body of the request."}),
        ("/v1/t", b"{not json", 400, {"type": "validation_error", "code": "invalid_payload", "attr": None,
                                      "detail": "The body is neither JSON nor base64-encoded JSON."}),
        ("/v1/t", b"[1]", 400, {"type": "validation_error", "code": "invalid_payload", "attr": None,
                                "detail": "The body must be a JSON object."}),
        ("/v1/b", {"writeKey": "k", "batch": []}, 400, {"type": "validation_error", "code": "no_data",
                                                          "attr": None, "detail": "The request holds no messages."}),
        ("/v1/t", {"type": "bogus", "userId": "u"}, 400,
         {"type": "validation_error", "code": "invalid_payload", "attr": "type",
          "detail": "Unknown Segment message type 'bogus'."}),
        ("/v1/t", {"type": "track", "event": "x", "userId": "u", "context": "web"}, 400,
         {"type": "validation_error", "code": "invalid_payload", "attr": "context",
          "detail": "'context' must be an object."}),
        ("/v1/t", {"type": "track", "event": "x", "userId": "u"}, 401,
         {"type": "authentication_error", "code": "missing_api_key", "attr": None, "detail": (
             "API key not found. You must pass your project's API key (token) in the request: as query parameter "
             "'token' or 'api_key', as body field 'api_key', or in properties.token of the first event.")}),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_cors(client, project, path, body, status, expected):
    if isinstance(body, dict) and body.get("writeKey") == "k":
        body["writeKey"] = project.api_token
    response = send(client, path, body)
    assert response.status_code == status
    assert response.json() == expected
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert queued_messages() == []


def test_get_is_405(client, project):
    response = client.get("/v1/t")
    assert response.status_code == 405
    assert response.json() == {"type": "validation_error", "code": "method_not_allowed", "detail": "Use POST.",
                               "attr": None}  # fmt: skip


def test_over_the_rate_limit_is_429_with_retry_after(client, project):
    project.rate_limit_per_minute = 1
    project.save()
    forget()
    assert send(client, "/v1/t", browser_message(project.api_token, "track", event="a")).status_code == 200
    response = send(client, "/v1/t", browser_message(project.api_token, "track", event="b"))
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["code"] == "rate_limited"
    assert len(queued_messages()) == 1


def test_broker_down_is_503_with_retry_after(client, project, servers):
    redis = servers["redis"]
    send(client, "/v1/t", browser_message(project.api_token, "track", event="warm"))  # the token is cached
    get_redis().delete(Queue.INGESTION.value)
    redis.stop()
    try:
        response = send(client, "/v1/t", browser_message(project.api_token, "track", event="lost"))
    finally:
        redis.start()
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["code"] == "server_error"
    assert queued_messages() == []
