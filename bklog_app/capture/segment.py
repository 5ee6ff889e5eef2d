"""Segment's tracking API (`/v1/batch`, `/v1/track`, `/v1/identify`, ...), mapped onto capture.

The project token is the Segment write key (HTTP Basic user, or body `writeKey`). Each Segment
message becomes the PostHog event it means, then takes the capture path: same checks, same
queue, same delivery promise.
"""

import base64
import uuid
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from bklog_app.capture.decoding import GZIP_MAGIC, check_events, gunzip, parse_body
from bklog_app.capture.errors import CaptureError, invalid_payload, no_data, payload_too_large
from bklog_app.capture.views import accept_events, error_response

# Segment messageIds are arbitrary strings; a non-UUID one maps to a stable UUID, so a client
# retry (same messageId) is still recognised as a duplicate.
MESSAGE_ID_NAMESPACE = uuid.UUID("5b6a2c1e-7f0d-4a53-9a0e-2d4c8b1f6e93")
SUCCESS = b'{"success": true}'


@csrf_exempt
def segment(request, kind: str):
    if request.method != "POST":
        return HttpResponse(status=405)
    try:
        body = _read_body(request)
        messages = body.get("batch") if kind == "batch" else [{**body, "type": body.get("type") or kind}]
        if not isinstance(messages, list) or not messages:
            raise no_data("The request holds no messages.")
        events = [_to_event(message) for message in messages if isinstance(message, dict)]
        events, _skipped = check_events(events, None)
        accept_events(request, _write_key(request, body), events, body.get("sentAt"))
    except CaptureError as error:
        return error_response(request, error)
    return HttpResponse(SUCCESS, content_type="application/json")


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
    properties = dict(message.get("properties") or {})
    traits = message.get("traits") or {}
    context = message.get("context") or {}
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
        if properties.get("url"):
            properties["$current_url"] = properties["url"]
        if message.get("name"):
            properties["$page_name"] = message["name"]
    elif kind == "screen":
        event["event"] = "$screen"
        if message.get("name"):
            properties["$screen_name"] = message["name"]
    else:
        raise invalid_payload(f"Unknown Segment message type {kind!r}.", attr="type")
    if context.get("ip"):
        properties.setdefault("$ip", context["ip"])
    library = context.get("library") or {}
    if library.get("name"):
        properties.setdefault("$lib", library["name"])
        properties.setdefault("$lib_version", library.get("version"))
    event["properties"] = properties
    if message.get("messageId"):
        event["uuid"] = _message_uuid(str(message["messageId"]))
    return event


def _message_uuid(message_id: str) -> str:
    try:
        return str(uuid.UUID(message_id))
    except ValueError:
        return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, message_id))
