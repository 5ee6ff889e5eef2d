"""Every body posthog-js sends to capture, current and legacy (bklog_app/capture/decoding.py):
lz64, sendBeacon's bodies, the capture-body envelope, numeric sent_at, the preflight's
requested headers; and `$process_person_profile: false` kept through ingestion, where it leaves
persons alone. Each test runs through Django's handler and through the fast path."""

import base64
import gzip
import json
import uuid
from urllib.parse import quote, urlencode

import orjson
import pytest

from bklog_app.persons.models import PersonDistinctId
from pipeline.ingestion.batch import ingest_messages
from tests.bklog_app.test_capture_api import queued_messages
from tests.fastpath_client import FastPathClient

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_ingestion_queue")]

# LZString.compressToBase64 (lz-string 1.5.0) of LZ64_EVENTS.
LZ64_EVENTS = [{"event": "lz event", "distinct_id": "user-1", "properties": {"text": "héllo wörld 😀", "n": [1, 2, 3]}}]
LZ64 = (
    "NobwRApgbhB2AuYBcYA2AvABNOiA0YAJgJYDO8xsAxvAPrGHJgCupEATgLQCMYBADuwD2/DhQilk4eBAAeiFAAsAl6lRDMAdwBv7VIUyBeDcA"
    "Ae3zCxkwbngBMeAMwBdAL7PHQA="
)
# compressToBase64 of {"event":"x","distinct_id":"d","properties":{"pad":"a" * 20000}}: 328 characters.
LZ64_BOMB = (
    "N4IgpgbmB2AuIC4QA8QBoQBMCWBnW20AxrAPraaJbogAOATgPa1j0Fi6Ki0CGlSPQUOEjRY8RMlTpM2XPkLFS5StVr1GzVu07de/QcNHjJ02f"
    "MXLV6zdt37Dx0+cvXb9x89fvP33/8BgUHBIaFh4RGRUdExsXHxCYlJySmpaekZmVnZObl5+QWFRcUlpWXlFZVV1TW1dfUNjU3NLa1t7R2dXd09"
    "vX39A4NDwyOjY+MTk1PTM7Nz8wuLS8srq2vrG5tb2zu7e/sHh0fHJ6dn5xeXV9c3t3f3D49Pzy+vb+8fn1/fP79//wDAUDgSDQWDiiAAL6QoA"
)


@pytest.fixture(params=["django handler", "fast path"])
def client(request, client):
    return client if request.param == "django handler" else FastPathClient()


def event(**fields) -> dict:
    return {"event": "clicked", "distinct_id": "user-1", "properties": {"a": 1}, **fields}


def assert_refused(response, status: int, body: dict) -> None:
    assert response.status_code == status, response.content
    assert response.json() == body


# --- lz64 (older posthog-js) ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["query", "form field", "unescaped form"])
def test_lz64_bodies(client, project, where):
    if where == "query":
        url, body = f"/e/?compression=lz64&token={project.api_token}", "data=" + quote(LZ64, safe="")
    elif where == "form field":
        url, body = f"/e/?token={project.api_token}", urlencode({"data": LZ64, "compression": "lz64"})
    else:  # a form post that did not escape its data: every + arrives as a space
        assert "+" in LZ64 or "/" in LZ64
        url, body = f"/e/?compression=lz64&token={project.api_token}", "data=" + LZ64.replace("+", " ")
    response = client.post(url, data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.content
    [queued] = queued_messages()[0]["events"]
    assert {key: queued[key] for key in ("event", "distinct_id", "properties")} == LZ64_EVENTS[0]


def test_lz64_flag_on_plain_json_reads_the_json(client, project):
    """An SDK whose compression failed sends its JSON as it is, still flagged lz64."""
    body = urlencode({"data": json.dumps(event())})
    response = client.post(
        f"/e/?compression=lz64&token={project.api_token}", data=body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ("N4Ig!!", "The body could not be decompressed (compression=lz64): '!' is not a base64 character."),
        (LZ64[:40], "The body could not be decompressed (compression=lz64): "
                    "the compressed text ends in the middle of a code."),
    ],
)  # fmt: skip
def test_broken_lz64_is_400(client, project, data, detail):
    response = client.post(
        f"/e/?compression=lz64&token={project.api_token}",
        data="data=" + quote(data, safe=""),
        content_type="application/x-www-form-urlencoded",
    )
    assert_refused(
        response, 400, {"type": "validation_error", "code": "invalid_payload", "detail": detail, "attr": None}
    )
    assert queued_messages() == []


def test_lz64_expanding_past_ten_times_the_limit_is_413(client, project, settings):
    settings.CAPTURE_MAX_EVENT_BYTES = 1000
    response = client.post(
        f"/e/?compression=lz64&token={project.api_token}",
        data="data=" + quote(LZ64_BOMB, safe=""),
        content_type="application/x-www-form-urlencoded",
    )
    assert_refused(
        response,
        413,
        {
            "type": "validation_error",
            "code": "payload_too_large",
            "detail": "The request body is larger than 1000 bytes. Send fewer events per request.",
            "attr": None,
        },
    )


# --- sendBeacon ----------------------------------------------------------------------------


def test_beacon_gzip_blob_as_text_plain(client, project):
    """posthog-js's sendBeacon with gzip-js: a Blob of gzip typed text/plain, no compression parameter."""
    envelope = {
        "api_key": project.api_token,
        "batch": [event(event="$pageleave")],
        "sent_at": "2024-05-01T10:00:00.000Z",
    }
    response = client.post(
        "/e/?ver=1.449.2&beacon=1", data=gzip.compress(orjson.dumps(envelope)), content_type="text/plain"
    )
    assert response.status_code == 200, response.content
    [message] = queued_messages()
    assert [e["event"] for e in message["events"]] == ["$pageleave"]
    assert message["sent_at"] == "2024-05-01T10:00:00.000Z"


def test_beacon_base64_form(client, project):
    """sendBeacon without gzip: base64 in a form body (a CORS-simple content type), compression=base64."""
    data = base64.b64encode(orjson.dumps({"api_key": project.api_token, "batch": [event()]})).decode()
    response = client.post(
        "/e/?compression=base64&beacon=1",
        data="data=" + quote(data, safe=""),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200, response.content


def test_older_beacon_form_text_sent_as_text_plain(client, project):
    """Older posthog-js handed sendBeacon the form text itself, which goes out as text/plain."""
    data = base64.b64encode(orjson.dumps([event(properties={"token": project.api_token})])).decode()
    response = client.post("/e/?beacon=1", data="data=" + quote(data, safe=""), content_type="text/plain")
    assert response.status_code == 200, response.content
    assert queued_messages()[0]["events"][0]["event"] == "clicked"


def test_text_plain_form_without_data_is_400_no_data(client, project):
    response = client.post(f"/e/?token={project.api_token}", data="data=", content_type="text/plain")
    assert response.status_code == 400
    assert response.json()["code"] == "no_data"


# --- sent_at -------------------------------------------------------------------------------


def test_numeric_sent_at_in_the_body_is_epoch_milliseconds(client, project):
    envelope = {"api_key": project.api_token, "batch": [event()], "sent_at": 1714557600123}
    assert client.post("/batch/", data=orjson.dumps(envelope), content_type="application/json").status_code == 200
    assert queued_messages()[0]["sent_at"].startswith("2024-05-01T10:00:00.123")


def test_numeric_sent_at_in_the_query(client, project):
    """posthog-js's timestamp mode 'query' puts Date.now() in `sent_at` on POSTs (`_` on GETs)."""
    raw = gzip.compress(orjson.dumps({"api_key": project.api_token, "batch": [event()]}))
    response = client.post("/i/v0/e/?ver=1.449.2&sent_at=1714557600123", data=raw, content_type="text/plain")
    assert response.status_code == 200, response.content
    assert queued_messages()[0]["sent_at"].startswith("2024-05-01T10:00:00.123")


def test_body_sent_at_wins_over_the_query(client, project):
    envelope = {"api_key": project.api_token, "batch": [event()], "sent_at": "2024-05-01T10:00:00.000Z"}
    client.post("/batch/?sent_at=1&_=1", data=orjson.dumps(envelope), content_type="application/json")
    assert queued_messages()[0]["sent_at"] == "2024-05-01T10:00:00.000Z"


def test_unreadable_sent_at_is_none(client, project):
    client.post(
        f"/e/?_=soon&token={project.api_token}", data=orjson.dumps(event(sent_at=True)), content_type="application/json"
    )
    assert queued_messages()[0]["sent_at"] is None


# --- CORS ----------------------------------------------------------------------------------


def test_capture_preflight_grants_requested_headers(client):
    response = client.options(
        "/i/v0/e/",
        HTTP_ORIGIN="https://shop.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type,x-posthog-session-id",
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert response["Access-Control-Allow-Headers"] == (
        "X-Requested-With, Content-Type, Content-Encoding, content-type,x-posthog-session-id"
    )


# --- $process_person_profile ---------------------------------------------------------------


def test_process_person_profile_false_reaches_ingestion_and_skips_persons(client, project):
    anonymous = event(distinct_id="anon-1", properties={"$process_person_profile": False, "$set": {"plan": "free"}})
    known = event(distinct_id="known-1", properties={"$process_person_profile": True, "$set": {"plan": "pro"}})
    envelope = {"api_key": project.api_token, "batch": [anonymous, known]}
    assert client.post("/batch/", data=orjson.dumps(envelope), content_type="application/json").status_code == 200
    [message] = queued_messages()
    assert message["events"][0]["properties"]["$process_person_profile"] is False

    ingest_messages([{**message, "id": str(uuid.uuid4())}])
    persons = set(PersonDistinctId.objects.filter(project_id=project.id).values_list("distinct_id", flat=True))
    assert persons == {"known-1"}
