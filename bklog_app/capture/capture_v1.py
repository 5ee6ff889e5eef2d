"""PostHog's Capture v1 protocol, `POST /i/v1/analytics/events`, as the PostHog SDKs send it in
their v1 capture mode (posthog-python `capture_mode="v1"`, posthog-node).

How it differs from `/batch` (docs/contracts.md):
- the token is `Authorization: Bearer <token>`; `PostHog-Sdk-Info` (`<lib>/<version>`, which
  becomes `$lib` / `$lib_version`), `PostHog-Attempt`, `PostHog-Request-Id`,
  `PostHog-Request-Timestamp`, `Content-Type: application/json` and `User-Agent` are required;
- the body is `{"created_at": ..., "batch": [...]}`, plain, gzip or deflate, and each event has
  `event`, `uuid`, `distinct_id`, `timestamp`, and optionally `properties`, `session_id`,
  `window_id` and typed `options`;
- a 200 gives every event its verdict, keyed by uuid: `ok`, `warning` (stored, with person
  processing off) or `drop` (not stored, with the reason in `details`). What is wrong with one
  event drops that event only; what makes the request unreadable (a field missing or of the
  wrong type, a bad or repeated uuid) refuses it whole with
  `{"error", "error_description", "error_uri"}`, as PostHog's capture does.

The delivery promise is the one of `/batch`: a 200 means every `ok` and `warning` event is in
Redis. If Redis does not take them, nothing is stored and the answer is 503, so there is no
per-event `retry` verdict: the client resends the batch with the same uuids (which ingestion
deduplicates). The rate limit is a 429. Both carry `Retry-After`.

The request timestamp is the batch's `sent_at`, so ingestion corrects each event's clock skew
as for `/batch` (`options.disable_skew_correction` turns it off per event). `PostHog-Request-Id`
and `PostHog-Attempt` are bound to the request's log context and logged with each refusal and
each retried request.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import structlog
from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from bklog_app.capture.decoding import MAX_DISTINCT_ID_LENGTH, gunzip, inflate, parse_body
from bklog_app.capture.errors import CaptureError
from bklog_app.capture.responses import respond
from bklog_app.capture.views import accept_events

logger = structlog.get_logger(__name__)

REQUIRED_HEADERS = (
    "PostHog-Sdk-Info",
    "PostHog-Attempt",
    "PostHog-Request-Id",
    "PostHog-Request-Timestamp",
    "Content-Type",
    "User-Agent",
)
ALLOW_HEADERS = ", ".join(
    name for name in ("Authorization", "Content-Encoding", *REQUIRED_HEADERS) if name != "User-Agent"
)
DECOMPRESSORS = {"gzip": gunzip, "deflate": inflate}
ERROR_URI = "https://posthog.com/docs/api"
MAX_EVENT_NAME_LENGTH = 200
# Values an SDK sends by mistake; events carrying one are stored without person processing.
ILLEGAL_DISTINCT_IDS = frozenset(
    {"0", "00000000-0000-0000-0000-000000000000", "[object object]", "anonymous", "anonymous-user", "backend",
     "distinct_id", "distinctid", "email", "false", "guest", "id", "nan", "none", "not_authenticated", "null",
     "system", "true", "undefined", "user"}
)  # fmt: skip
# CaptureError codes of the shared capture path, as Capture v1 names them.
V1_CODES = {
    "invalid_api_key": "invalid_api_token",
    "payload_too_large": "payload_too_large",
    "rate_limited": "rate_limited",
    "server_error": "service_unavailable",
}


@dataclass
class V1Error(Exception):
    status: int
    error: str
    description: str

    def body(self) -> bytes:
        return orjson.dumps({"error": self.error, "error_description": self.description, "error_uri": ERROR_URI})


@dataclass
class V1Request:
    token: str
    sdk_lib: tuple[str, str] | None
    attempt: int
    request_id: str
    sent_at: str
    content_encoding: str | None


@csrf_exempt
def capture_v1(request) -> HttpResponse:
    if request.method == "OPTIONS":
        return respond(request, 204, b"", allow_headers=ALLOW_HEADERS)
    try:
        if request.method != "POST":
            raise V1Error(405, "method_not_allowed", "Use POST.")
        v1 = _read_headers(request)
        structlog.contextvars.bind_contextvars(posthog_request_id=v1.request_id, posthog_attempt=v1.attempt)
        if v1.attempt > 1:
            logger.info("capture v1 request retried")
        results, events = _check_batch(_read_body(request, v1.content_encoding), v1)
        _accept(request, v1, events)
    except V1Error as error:
        log = logger.error if error.status >= 500 else logger.warning
        log("capture v1 refused", status=error.status, error=error.error, detail=error.description)
        return respond(request, error.status, error.body(), allow_headers=ALLOW_HEADERS)
    dropped = Counter(verdict["details"] for verdict in results.values() if verdict["result"] == "drop")
    if dropped:
        logger.warning("capture v1 dropped events", reasons=dict(dropped))
    return respond(request, 200, orjson.dumps({"results": results}), allow_headers=ALLOW_HEADERS)


def _read_headers(request) -> V1Request:
    headers = request.headers
    authorization = headers.get("Authorization")
    if authorization is None:
        raise V1Error(401, "missing_authorization", "Send the project token as 'Authorization: Bearer <token>'.")
    missing = [name for name in REQUIRED_HEADERS if not headers.get(name)]
    if missing:
        raise V1Error(400, "missing_required_headers", f"The request is missing required headers: {missing}.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise V1Error(400, "invalid_header_value", "Authorization must use the Bearer scheme.")
    if not token.strip():
        raise V1Error(401, "invalid_api_token", "The Bearer token is empty.")
    content_type = headers["Content-Type"].split(";")[0].strip().lower()
    if content_type != "application/json":
        raise V1Error(415, "unsupported_content_type", f"Content-Type must be application/json, not {content_type!r}.")
    encoding = headers.get("Content-Encoding", "").strip().lower() or None
    if encoding is not None and encoding not in DECOMPRESSORS:
        raise V1Error(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported: use gzip or deflate."
        )
    request_id = headers["PostHog-Request-Id"].strip()
    try:
        UUID(request_id)
    except ValueError:
        raise V1Error(
            400, "invalid_header_value", f"PostHog-Request-Id is not a valid UUID: {request_id[:64]!r}."
        ) from None
    attempt = headers["PostHog-Attempt"].strip()
    if not attempt.isdigit() or int(attempt) < 1:
        raise V1Error(400, "invalid_header_value", f"PostHog-Attempt must be a positive integer: {attempt[:20]!r}.")
    sent_at = headers["PostHog-Request-Timestamp"].strip()
    if _rfc3339(sent_at) is None:
        raise V1Error(400, "invalid_header_value", f"PostHog-Request-Timestamp is not RFC 3339: {sent_at[:64]!r}.")
    lib, _, version = headers["PostHog-Sdk-Info"].strip().rpartition("/")
    sdk_lib = (lib.strip(), version.strip()) if lib.strip() and version.strip() and len(lib) < 200 else None
    return V1Request(token.strip(), sdk_lib, int(attempt), request_id, sent_at, encoding)


def _read_body(request, encoding: str | None) -> Any:
    limit = settings.CAPTURE_MAX_BATCH_BYTES
    try:
        declared = request.META.get("CONTENT_LENGTH")
        if (declared and declared.isdigit() and int(declared) > limit) or len(request.body) > limit:
            raise V1Error(413, "payload_too_large", f"The request body is larger than {limit} bytes.")
        if not request.body:
            raise V1Error(400, "empty_body", "The request body is empty.")
        data = DECOMPRESSORS[encoding](request.body, limit) if encoding else request.body
    except CaptureError as error:
        code = "payload_too_large" if error.status == 413 else "request_decoding_error"
        raise V1Error(error.status, code, error.detail) from None
    try:
        return parse_body(data, limit)
    except CaptureError as error:
        raise V1Error(400, "request_parsing_error", error.detail) from None


def _check_batch(body: Any, v1: V1Request) -> tuple[dict[str, dict], list[dict]]:
    """Each event's verdict by uuid, and the events to store."""
    if not isinstance(body, dict):
        raise V1Error(
            400, "request_parsing_error", 'The body must be a JSON object: {"created_at": ..., "batch": [...]}.'
        )
    if not isinstance(body.get("created_at"), str):
        raise V1Error(400, "request_parsing_error", "'created_at' is missing or not a string.")
    if _rfc3339(body["created_at"]) is None:
        raise V1Error(400, "invalid_batch", f"created_at is not valid RFC 3339: {body['created_at'][:64]!r}.")
    batch = body.get("batch")
    if not isinstance(batch, list):
        raise V1Error(400, "request_parsing_error", "'batch' is missing or not a list.")
    if not batch:
        raise V1Error(400, "empty_batch", "The batch holds no events.")
    results: dict[str, dict] = {}
    events = []
    for index, raw in enumerate(batch):
        uuid = _uuid(raw, index)
        if uuid in results:
            raise V1Error(400, "duplicate_event_uuid", f"Event {index}: uuid {uuid} appears twice in the batch.")
        event, verdict = _check_event(raw, uuid, v1)
        results[uuid] = verdict
        if event is not None:
            events.append(event)
    return results, events


def _uuid(raw: Any, index: int) -> str:
    """The event's uuid, once the fields every event must have were found of the right type."""
    if not isinstance(raw, dict):
        raise V1Error(400, "request_parsing_error", f"Event {index} is not a JSON object.")
    for field in ("event", "uuid", "distinct_id", "timestamp"):
        if not isinstance(raw.get(field), str):
            raise V1Error(400, "request_parsing_error", f"Event {index}: '{field}' is missing or not a string.")
    for field in ("session_id", "window_id"):
        if raw.get(field) is not None and not isinstance(raw[field], str):
            raise V1Error(400, "request_parsing_error", f"Event {index}: '{field}' is not a string.")
    text = raw["uuid"].strip()
    if not text:
        raise V1Error(400, "missing_event_uuid", f"Event {index} has an empty uuid.")
    try:
        return str(UUID(text))
    except ValueError:
        raise V1Error(400, "invalid_event_uuid", f"Event {index}: uuid is not a valid UUID: {text[:64]!r}.") from None


def _check_event(raw: dict, uuid: str, v1: V1Request) -> tuple[dict | None, dict]:
    """The event to store (None if dropped) and its verdict."""
    name, distinct_id, properties = raw["event"], raw["distinct_id"].strip(), raw.get("properties", {})
    problem = (
        "dropped_performance_event" if name == "$performance_event"
        else "missing_event_name" if not name
        else "event_name_too_long" if len(name) > MAX_EVENT_NAME_LENGTH
        else "missing_distinct_id" if not distinct_id
        else "distinct_id_too_large" if len(distinct_id) > MAX_DISTINCT_ID_LENGTH
        else "invalid_event_timestamp" if _rfc3339(raw["timestamp"]) is None
        else "malformed_event_properties" if not isinstance(properties, dict)
        else None
    )  # fmt: skip
    options = _options(raw.get("options"))
    if problem is None and options is None:
        problem = "invalid_options"
    if problem is not None:
        return None, {"result": "drop", "details": problem}
    properties = {**properties, **options}
    for field in ("session_id", "window_id"):
        if raw.get(field) is not None:
            properties[f"${field}"] = raw[field]
    if v1.sdk_lib is not None:
        properties["$lib"], properties["$lib_version"] = v1.sdk_lib
    verdict = {"result": "ok"}
    if distinct_id.lower() in ILLEGAL_DISTINCT_IDS:
        properties["$process_person_profile"] = False
        verdict = {"result": "warning", "details": "person_processing_disabled"}
    event = {"event": name, "uuid": uuid, "distinct_id": distinct_id, "timestamp": raw["timestamp"]}
    return {**event, "properties": properties}, verdict


OPTION_PROPERTIES = {
    "cookieless_mode": "$cookieless_mode",
    "disable_skew_correction": "$ignore_sent_at",
    "process_person_profile": "$process_person_profile",
}


def _options(options: Any) -> dict | None:
    """The event's `options` as the properties ingestion reads; None if one cannot be read."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        return None
    properties = {}
    for option, prop in OPTION_PROPERTIES.items():
        if options.get(option) is not None:
            value = _bool(options[option])
            if value is None:
                return None
            properties[prop] = value
    tour = options.get("product_tour_id")
    if tour is not None:
        if isinstance(tour, bool) or not isinstance(tour, (str, int)):
            return None
        properties["$product_tour_id"] = str(tour)
    return properties


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        return {"true": True, "1": True, "false": False, "0": False}.get(value.strip().lower())
    return None


def _rfc3339(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None and "T" in text.upper() else None


def _accept(request, v1: V1Request, events: list[dict]) -> None:
    try:
        accept_events(request, v1.token, events, v1.sent_at)
    except CaptureError as error:
        raise V1Error(error.status, V1_CODES.get(error.code, error.code), error.detail) from None
