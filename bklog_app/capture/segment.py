"""Segment's tracking API (`/v1/batch`, `/v1/track`, `/v1/identify`, ...), mapped onto capture.

Also the short paths Segment's browser library (analytics.js, @segment/analytics-next) posts to:
`/v1/t`, `/v1/i`, `/v1/p`, `/v1/a`, `/v1/g`, `/v1/s` (one message each, by the first letter of
its type) and `/v1/b` (its batching delivery strategy). The browser sends them as
`Content-Type: text/plain` with the write key inside the body (and, in recent versions, as
`Authorization: Basic` too, which makes browsers send a CORS preflight: it is answered). The
library also reports its own delivery metrics to `/v1/m` every 30 seconds (unless the settings'
`metrics.sampleRate` is 0); they are answered and not kept.

The project token is the Segment write key (HTTP Basic user, or body `writeKey`). Each Segment
message becomes the PostHog event it means, then takes the capture path: same checks, same
queue, same delivery promise. analytics.js treats any status under 400 as delivered, retries
5xx, retries a 429 after its `Retry-After`, and drops the events of any other 4xx.
"""

import base64
import uuid
from typing import Any

import orjson
from django.conf import settings
from django.views.decorators.csrf import csrf_exempt

from bklog_app.capture.decoding import GZIP_MAGIC, check_events, gunzip, parse_body
from bklog_app.capture.errors import CaptureError, invalid_payload, no_data, payload_too_large
from bklog_app.capture.responses import respond
from bklog_app.capture.views import accept_events, refusal

# Segment messageIds are arbitrary strings; a non-UUID one maps to a stable UUID, so a client
# retry (same messageId) is still recognised as a duplicate.
MESSAGE_ID_NAMESPACE = uuid.UUID("5b6a2c1e-7f0d-4a53-9a0e-2d4c8b1f6e93")
SUCCESS = b'{"success": true}'
SHORT_PATHS = {"t": "track", "i": "identify", "p": "page", "a": "alias", "g": "group", "s": "screen", "b": "batch"}
ALLOW_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Retry-Count, X-Requested-With"
# Where a message's page (context.page; a page call's own properties first) lands in properties.
PAGE_PROPERTIES = {"url": "$current_url", "path": "$pathname", "referrer": "$referrer", "title": "$title"}


@csrf_exempt
def segment(request, kind: str):
    if request.method == "OPTIONS":
        return respond(request, 204, b"", allow_headers=ALLOW_HEADERS)
    if request.method != "POST":
        error = CaptureError(405, "validation_error", "method_not_allowed", "Use POST.")
        return respond(request, 405, orjson.dumps(error.body()), allow_headers=ALLOW_HEADERS)
    if kind == "m":
        return respond(request, 200, SUCCESS, allow_headers=ALLOW_HEADERS)
    kind = SHORT_PATHS.get(kind, kind)
    try:
        body = _read_body(request)
        messages = body.get("batch") if kind == "batch" else [{**body, "type": body.get("type") or kind}]
        if not isinstance(messages, list) or not messages:
            raise no_data("The request holds no messages.")
        events = [_to_event(message) for message in messages if isinstance(message, dict)]
        events, _skipped = check_events(events, None)
        sent_at = body.get("sentAt") if isinstance(body.get("sentAt"), str) else None
        accept_events(request, _write_key(request, body), events, sent_at)
    except CaptureError as error:
        return respond(request, *refusal(error), allow_headers=ALLOW_HEADERS)
    return respond(request, 200, SUCCESS, allow_headers=ALLOW_HEADERS)


def _read_body(request) -> dict:
    limit = settings.CAPTURE_MAX_BATCH_BYTES
    declared = request.META.get("CONTENT_LENGTH")
    if declared and declared.isdigit() and int(declared) > limit:
        raise payload_too_large(limit)
    data = request.body
    if not data:
        raise no_data()
    if "gzip" in request.headers.get("Content-Encoding", "") or data[:2] == GZIP_MAGIC:
        data = gunzip(data, limit)
    body = parse_body(data, limit)
    if not isinstance(body, dict):
        raise invalid_payload("The body must be a JSON object.")
    return body


def _write_key(request, body: dict) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            user = base64.b64decode(credentials).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            user = ""
        if user:
            return user
    key = body.get("writeKey")
    return key if isinstance(key, str) and key else None


def _to_event(message: dict[str, Any]) -> dict:
    kind = message.get("type")
    properties, traits, context = (dict(_object(message, field)) for field in ("properties", "traits", "context"))
    distinct_id = message.get("userId") or message.get("anonymousId")
    event: dict[str, Any] = {"distinct_id": distinct_id, "timestamp": message.get("timestamp")}
    if kind == "track":
        event["event"] = message.get("event")
    elif kind == "identify":
        event["event"] = "$identify"
        event["$set"] = traits
        if message.get("userId") and message.get("anonymousId"):
            properties["$anon_distinct_id"] = message["anonymousId"]
    elif kind == "alias":
        event["event"] = "$create_alias"
        properties["alias"] = message.get("previousId")
    elif kind == "group":
        event["event"] = "$groupidentify"
        properties.update({"$group_type": traits.get("group_type", "group"), "$group_key": message.get("groupId"),
                           "$group_set": traits})  # fmt: skip
    elif kind == "page":
        event["event"] = "$pageview"
        if message.get("name"):
            properties["$page_name"] = message["name"]
    elif kind == "screen":
        event["event"] = "$screen"
        if message.get("name"):
            properties["$screen_name"] = message["name"]
    else:
        raise invalid_payload(f"Unknown Segment message type {kind!r}.", attr="type")
    _page_properties(properties, context, own=kind == "page")
    if context.get("ip"):
        properties.setdefault("$ip", context["ip"])
    if context.get("userAgent"):
        properties.setdefault("$raw_user_agent", context["userAgent"])
    library = _object(context, "library")
    if library.get("name"):
        properties.setdefault("$lib", library["name"])
        properties.setdefault("$lib_version", library.get("version"))
    event["properties"] = properties
    if message.get("messageId"):
        event["uuid"] = _message_uuid(str(message["messageId"]))
    return event


def _object(message: dict, field: str) -> dict:
    value = message.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_payload(f"'{field}' must be an object.", attr=field)
    return value


def _page_properties(properties: dict, context: dict, *, own: bool) -> None:
    """The page the message was sent from; a page call's own properties (`own`) come first."""
    page = _object(context, "page")
    for field, prop in PAGE_PROPERTIES.items():
        value = (own and properties.get(field)) or page.get(field)
        if value:
            properties.setdefault(prop, value)


def _message_uuid(message_id: str) -> str:
    try:
        return str(uuid.UUID(message_id))
    except ValueError:
        return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, message_id))
