"""The capture API of docs/contracts.md#capture-api: every path, body form, token location and status row.

These tests stop at the queue: a 200 must leave exactly one message in Redis's `ingestion` list.
"""

import base64
import gzip
import json
import uuid
from urllib.parse import urlencode

import orjson
import pytest

from pipeline.ingestion import publish
from pipeline.ingestion.message import parts_of
from pipeline.queues import Queue
from pipeline.redis import get_redis
from tests.fastpath_client import FastPathClient

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_ingestion_queue")]


@pytest.fixture(params=["django handler", "fast path"])
def client(request, client):
    """Every test runs twice: through Django's handler (the URLconf) and through the WSGI
    application Gunicorn serves, whose fast path takes capture URLs around the middleware."""
    return client if request.param == "django handler" else FastPathClient()


def queued_messages() -> list[dict]:
    """The captured requests waiting in Redis, oldest first: each message's parts
    (pipeline/ingestion/coalesce.py), decoded from Celery's JSON envelope."""
    raw = get_redis().lrange(Queue.INGESTION.value, 0, -1)
    messages = []
    for item in reversed(raw):  # kombu LPUSHes: the oldest is last
        body = publish.message_body(item)
        messages.extend(parts_of(body[1]))  # (args, kwargs, embed)
    return messages


def event(**fields) -> dict:
    return {"event": "clicked", "distinct_id": "user-1", "properties": {"a": 1}, **fields}


def assert_error(response, status: int, code: str, attr: str | None = None):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert body["type"] in ("validation_error", "authentication_error", "throttled_error", "server_error")
    assert body["detail"]
    if attr is not None:
        assert body["attr"] == attr
    return body


# --- Paths and body forms ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/e",
        "/e/",
        "/capture",
        "/capture/",
        "/track",
        "/track/",
        "/batch",
        "/batch/",
        "/i/v0/e",
        "/i/v0/e/",
        "/engage",
        "/engage/",
    ],
)
def test_every_capture_path_accepts_an_event(client, project, path):
    response = client.post(
        path, data=orjson.dumps({"api_key": project.api_token, **event()}), content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json() == {"status": 1}
    assert len(queued_messages()) == 1


def test_engage_forces_identify(client, project):
    client.post(
        "/engage/",
        data=orjson.dumps({"api_key": project.api_token, **event(event="whatever")}),
        content_type="application/json",
    )
    assert queued_messages()[0]["events"][0]["event"] == "$identify"


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/json"])
def test_raw_body_content_types(client, project, content_type):
    response = client.generic(
        "POST", "/e/", orjson.dumps({"token": project.api_token, **event()}), content_type=content_type
    )
    assert response.status_code == 200


def test_form_data_field(client, project):
    data = json.dumps({"api_key": project.api_token, **event()})
    response = client.post("/e/", data=urlencode({"data": data}), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert queued_messages()[0]["events"][0]["event"] == "clicked"


def test_multipart_form_data_field(client, project):
    data = json.dumps({"api_key": project.api_token, **event()})
    response = client.post("/e/?compression=", data={"data": data})  # the test client's default: multipart
    assert response.status_code == 200
    assert queued_messages()[0]["events"][0]["event"] == "clicked"


def test_form_data_base64_with_spaces_for_plus(client, project):
    payload = json.dumps({"api_key": project.api_token, **event(properties={"q": "??>>"})})
    encoded = base64.b64encode(payload.encode()).decode()
    assert "+" in encoded  # the case this test is about
    body = "data=" + encoded.replace("+", " ")  # what a form post without escaping delivers
    response = client.post("/e/", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert queued_messages()[0]["events"][0]["properties"]["q"] == "??>>"


def test_get_with_data_query_parameter(client, project):
    data = base64.b64encode(json.dumps(event()).encode()).decode()
    response = client.get("/e/", {"data": data, "token": project.api_token})
    assert response.status_code == 200


@pytest.mark.parametrize("how", ["header", "query-gzip", "query-gzip-js", "form-field", "magic-bytes"])
def test_gzip_everywhere(client, project, how):
    raw = gzip.compress(orjson.dumps({"api_key": project.api_token, "batch": [event(), event(event="second")]}))
    if how == "header":
        response = client.post("/batch/", data=raw, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    elif how == "query-gzip":
        response = client.post("/batch/?compression=gzip", data=raw, content_type="text/plain")
    elif how == "query-gzip-js":
        response = client.post("/batch/?compression=gzip-js", data=raw, content_type="text/plain")
    elif how == "form-field":
        body = urlencode({"data": raw.decode("latin-1"), "compression": "gzip"}, encoding="latin-1")
        response = client.post("/batch/", data=body, content_type="application/x-www-form-urlencoded")
    else:
        response = client.post("/batch/", data=raw, content_type="application/json")
    assert response.status_code == 200, response.content
    assert [e["event"] for e in queued_messages()[0]["events"]] == ["clicked", "second"]


def test_nan_and_infinity_become_null(client, project):
    body = (
        '{"api_key": "%s", "event": "x", "distinct_id": "d", "properties": {"a": NaN, "b": Infinity, "c": -Infinity}}'
    )
    response = client.post("/e/", data=body % project.api_token, content_type="application/json")
    assert response.status_code == 200
    assert queued_messages()[0]["events"][0]["properties"] == {"a": None, "b": None, "c": None}


def test_payload_shapes_single_list_and_batch(client, project):
    token = project.api_token
    assert (
        client.post(
            "/e/", data=orjson.dumps({"api_key": token, **event()}), content_type="application/json"
        ).status_code
        == 200
    )
    assert (
        client.post(
            f"/e/?token={token}", data=orjson.dumps([event(), event()]), content_type="application/json"
        ).status_code
        == 200
    )
    assert (
        client.post(
            "/batch/", data=orjson.dumps({"api_key": token, "batch": [event()] * 3}), content_type="application/json"
        ).status_code
        == 200
    )
    assert [len(m["events"]) for m in queued_messages()] == [1, 2, 3]


def test_one_message_per_request_not_per_event(client, project):
    batch = [event(distinct_id=f"u{i}") for i in range(50)]
    client.post(
        "/batch/", data=orjson.dumps({"api_key": project.api_token, "batch": batch}), content_type="application/json"
    )
    messages = queued_messages()
    assert len(messages) == 1
    assert len(messages[0]["events"]) == 50
    assert messages[0]["project_id"] == project.id


# --- Token locations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        "query-token",
        "query-api_key",
        "form-api_key",
        "form-token",
        "body-api_key",
        "body-token",
        "body-$token",
        "properties-token",
    ],
)
def test_token_locations(client, project, where):
    token = project.api_token
    path, body, content_type = "/e/", event(), "application/json"
    if where == "query-token":
        path += f"?token={token}"
    elif where == "query-api_key":
        path += f"?api_key={token}"
    elif where in ("form-api_key", "form-token"):
        data = urlencode({"data": json.dumps(body), where.split("-")[1]: token})
        response = client.post(path, data=data, content_type="application/x-www-form-urlencoded")
        assert response.status_code == 200
        return
    elif where.startswith("body-"):
        body = {**body, where[5:]: token}
    else:
        body["properties"]["token"] = token
    response = client.post(path, data=orjson.dumps(body), content_type=content_type)
    assert response.status_code == 200


def test_first_token_found_wins(client, project):
    other = "phc_not_a_real_token"
    response = client.post(
        f"/e/?token={project.api_token}",
        data=orjson.dumps({"api_key": other, **event()}),
        content_type="application/json",
    )
    assert response.status_code == 200
    response = client.post(
        f"/e/?token={other}",
        data=orjson.dumps({"api_key": project.api_token, **event()}),
        content_type="application/json",
    )
    assert_error(response, 401, "invalid_api_key")


# --- distinct_id, uuid, sent_at, skipped events --------------------------------------------


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"$distinct_id": "a", "distinct_id": "c", "properties": {"distinct_id": "b"}}, "a"),
        ({"distinct_id": "c", "properties": {"distinct_id": "b"}}, "b"),
        ({"distinct_id": 12345}, "12345"),
        ({"distinct_id": "x" * 300}, "x" * 200),
    ],
)
def test_distinct_id_sources_and_cut(client, project, fields, expected):
    body = {"api_key": project.api_token, "event": "e", "properties": {}, **fields}
    body.pop("distinct_id", None) if "distinct_id" not in fields else None
    response = client.post("/e/", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 200
    assert queued_messages()[0]["events"][0]["distinct_id"] == expected


def test_event_without_name_is_skipped_rest_accepted(client, project):
    batch = [event(), {"distinct_id": "x", "properties": {}}, event(event="kept")]
    response = client.post(
        "/batch/", data=orjson.dumps({"api_key": project.api_token, "batch": batch}), content_type="application/json"
    )
    assert response.status_code == 200
    assert [e["event"] for e in queued_messages()[0]["events"]] == ["clicked", "kept"]


def test_sent_at_from_body_and_from_underscore_query(client, project):
    client.post(
        "/batch/",
        data=orjson.dumps({"api_key": project.api_token, "sent_at": "2024-01-01T00:00:00Z", "batch": [event()]}),
        content_type="application/json",
    )
    client.post(
        f"/e/?_=1704067200123&token={project.api_token}", data=orjson.dumps(event()), content_type="application/json"
    )
    client.post(
        f"/e/?_=1704067200&token={project.api_token}", data=orjson.dumps(event()), content_type="application/json"
    )
    sent = [m["sent_at"] for m in queued_messages()]
    assert sent[0] == "2024-01-01T00:00:00Z"
    assert sent[1].startswith("2024-01-01T00:00:00.123")
    assert sent[2].startswith("2024-01-01T00:00:00")


def test_client_ip_travels_with_the_batch(client, project, settings):
    client.post(
        "/e/",
        data=orjson.dumps({"api_key": project.api_token, **event()}),
        content_type="application/json",
        REMOTE_ADDR="10.1.2.3",
        HTTP_X_FORWARDED_FOR="6.6.6.6",
    )
    settings.CAPTURE_TRUSTED_PROXIES = ["10.0.0.0/8"]
    client.post(
        "/e/",
        data=orjson.dumps({"api_key": project.api_token, **event()}),
        content_type="application/json",
        REMOTE_ADDR="10.1.2.3",
        HTTP_X_FORWARDED_FOR="7.7.7.7, 10.9.9.9",
    )
    assert [m["ip"] for m in queued_messages()] == ["10.1.2.3", "7.7.7.7"]


# --- The status table --------------------------------------------------------------------


def test_no_token_is_401_missing_api_key(client, project):
    assert_error(
        client.post("/e/", data=orjson.dumps(event()), content_type="application/json"), 401, "missing_api_key"
    )


def test_unknown_token_is_401_invalid_api_key(client, project):
    response = client.post(
        "/e/", data=orjson.dumps({"api_key": "phc_unknown", **event()}), content_type="application/json"
    )
    body = assert_error(response, 401, "invalid_api_key")
    assert body["type"] == "authentication_error"


def test_a_token_with_a_nul_character_is_401_invalid_api_key(client, project):
    """No project's token holds U+0000 (PostgreSQL's text cannot): unknown, not a server error."""
    response = client.post(
        "/e/", data=orjson.dumps({"api_key": project.api_token + "\x00", **event()}), content_type="application/json"
    )
    assert assert_error(response, 401, "invalid_api_key")["type"] == "authentication_error"


@pytest.mark.parametrize("method", ["post-empty", "get-no-data", "form-no-data"])
def test_empty_body_is_400_no_data(client, project, method):
    if method == "post-empty":
        response = client.post(f"/e/?token={project.api_token}", data=b"", content_type="application/json")
    elif method == "get-no-data":
        response = client.get("/e/", {"token": project.api_token})
    else:
        response = client.post(
            "/e/", data=urlencode({"api_key": project.api_token}), content_type="application/x-www-form-urlencoded"
        )
    assert_error(response, 400, "no_data")


@pytest.mark.parametrize("body", [b"{not json", b"\x1f\x8bnot really gzip", b"!!!***", b'"just a string"', b"42"])
def test_undecodable_or_not_json_is_400_invalid_payload(client, project, body):
    response = client.post(f"/e/?token={project.api_token}", data=body, content_type="application/json")
    assert_error(response, 400, "invalid_payload")


@pytest.mark.parametrize("distinct_id", [None, "", "   "])
def test_missing_or_blank_distinct_id_is_400_naming_the_field(client, project, distinct_id):
    body = {"api_key": project.api_token, "event": "e", "properties": {}}
    if distinct_id is not None:
        body["distinct_id"] = distinct_id
    body = assert_error(
        client.post("/e/", data=orjson.dumps(body), content_type="application/json"),
        400,
        "invalid_payload",
        attr="distinct_id",
    )
    assert "distinct_id" in body["detail"]


def test_invalid_uuid_is_400_invalid_payload(client, project):
    response = client.post(
        "/e/",
        data=orjson.dumps({"api_key": project.api_token, **event(uuid="not-a-uuid")}),
        content_type="application/json",
    )
    body = assert_error(response, 400, "invalid_payload", attr="uuid")
    assert "uuid" in body["detail"]
    assert queued_messages() == []


def test_valid_uuid_is_kept(client, project):
    value = str(uuid.uuid4())
    client.post(
        "/e/", data=orjson.dumps({"api_key": project.api_token, **event(uuid=value)}), content_type="application/json"
    )
    assert queued_messages()[0]["events"][0]["uuid"] == value


def test_single_event_over_2mb_is_413(client, project):
    big = {"api_key": project.api_token, **event(properties={"blob": "x" * (2 * 1024 * 1024 + 10)})}
    assert_error(client.post("/e/", data=orjson.dumps(big), content_type="application/json"), 413, "payload_too_large")


def test_batch_over_2mb_is_fine_and_over_20mb_is_413(client, project):
    chunk = "x" * (1024 * 1024)
    ok = {"api_key": project.api_token, "batch": [event(properties={"blob": chunk}) for _ in range(3)]}
    assert client.post("/batch/", data=orjson.dumps(ok), content_type="application/json").status_code == 200
    too_big = {"api_key": project.api_token, "batch": [event(properties={"blob": chunk}) for _ in range(21)]}
    assert_error(
        client.post("/batch/", data=orjson.dumps(too_big), content_type="application/json"), 413, "payload_too_large"
    )


def test_gzip_bomb_is_413(client, project):
    bomb = gzip.compress(b'{"batch": [' + b" " * (300 * 1024 * 1024) + b"]}")
    assert_error(
        client.post(f"/batch/?token={project.api_token}", data=bomb, content_type="text/plain"),
        413,
        "payload_too_large",
    )


def test_over_rate_limit_is_429(client, project):
    project.rate_limit_per_minute = 5
    project.save()
    from pipeline.ingestion.projects import forget

    forget()
    batch = {"api_key": project.api_token, "batch": [event() for _ in range(4)]}
    assert client.post("/batch/", data=orjson.dumps(batch), content_type="application/json").status_code == 200
    response = client.post("/batch/", data=orjson.dumps(batch), content_type="application/json")
    assert_error(response, 429, "rate_limited")
    assert len(queued_messages()) == 1


def test_broker_down_is_503_and_nothing_enqueued(client, project, servers):
    redis = servers["redis"]
    body = orjson.dumps({"api_key": project.api_token, **event()})
    redis.stop()
    try:
        response = client.post("/e/", data=body, content_type="application/json")
    finally:
        redis.start()
    body = assert_error(response, 503, "server_error")
    assert "Retry" in body["detail"]
    assert queued_messages() == []
    # and it recovers by itself once Redis is back
    assert (
        client.post(
            "/e/", data=orjson.dumps({"api_key": project.api_token, **event()}), content_type="application/json"
        ).status_code
        == 200
    )


def test_cors_preflight_and_headers(client, project):
    response = client.options("/e/", HTTP_ORIGIN="https://app.example.com")
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "https://app.example.com"
    response = client.post(
        "/e/",
        data=orjson.dumps({"api_key": project.api_token, **event()}),
        content_type="application/json",
        HTTP_ORIGIN="https://app.example.com",
    )
    assert response["Access-Control-Allow-Credentials"] == "true"
