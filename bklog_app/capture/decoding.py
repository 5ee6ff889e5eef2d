"""Turn a capture request into a list of raw events, the way PostHog's capture endpoint does.

The body may arrive raw, as form field `data`, or as query parameter `data`; gzipped (by
header, by flag, or just by its magic bytes); LZ-String-compressed (`compression=lz64`, older
posthog-js); as JSON or as base64 of JSON. posthog-js's `sendBeacon` bodies are one of these
under another content type: a gzip Blob as `text/plain` (found by its magic bytes) or, from
older versions, the form text `data=...` as `text/plain`. This module knows nothing of projects
or queues: it only decodes and checks shape. The SDK endpoints (bklog_app/sdk/views.py) read
their bodies with `decode_payload` too.
"""

import base64
import binascii
import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from bklog_app.capture.errors import CaptureError, invalid_payload, no_data, payload_too_large
from bklog_app.capture.lzstring import LZStringError, decompress_from_base64
from pipeline.ingestion.message import canonical_uuid

GZIP_MAGIC = b"\x1f\x8b"
RAW_BODY_CONTENT_TYPES = {"", "text/plain", "application/json"}
MAX_DISTINCT_ID_LENGTH = 200


@dataclass
class DecodedCapture:
    events: list[dict[str, Any]]
    token: str | None
    sent_at: str | None


def decode_request(request, *, limit: int, force_event: str | None = None) -> DecodedCapture:
    """Decode and check a capture request; raise CaptureError with the status to answer."""
    payload, form = decode_payload(request, limit)
    if isinstance(payload, dict) and "batch" in payload:
        raw_events = payload["batch"]
        body = payload
    elif isinstance(payload, dict):
        raw_events = [payload]
        body = payload
    elif isinstance(payload, list):
        raw_events = payload
        body = {}
    else:
        raise invalid_payload('The payload must be an event object, a list of events, or {"batch": [...]}.')
    if not isinstance(raw_events, list):
        raise invalid_payload("'batch' must be a list of events.", attr="batch")
    if not raw_events:
        raise no_data("The request holds no events.")
    for index, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            raise invalid_payload(f"Event {index} is not a JSON object.", attr="batch")

    token = _find_token(request, form, body, raw_events)
    events, _skipped = check_events(raw_events, force_event)
    return DecodedCapture(events=events, token=token, sent_at=_sent_at(request, body))


def decode_payload(request, limit: int) -> tuple[Any, dict[str, str]]:
    """The request's JSON payload, whichever way it was packed, and its other form fields."""
    data, form = _read_data(request, limit)
    compression = (request.GET.get("compression") or form.get("compression") or "").lower()
    content_encoding = request.headers.get("Content-Encoding", "")
    if compression in ("gzip", "gzip-js") or "gzip" in content_encoding or data[:2] == GZIP_MAGIC:
        data = gunzip(data, limit)
    elif compression == "lz64" and data.lstrip()[:1] not in (b"{", b"["):  # a fallback may send plain JSON
        data = lz64_decompress(data, limit)
    return parse_body(data, limit), form


def _sent_at(request, body: dict) -> str | None:
    """When the SDK sent the request: body `sent_at` (ISO 8601 or epoch milliseconds), else
    query `sent_at` or `_` (epoch milliseconds or seconds)."""
    sent_at = body.get("sent_at")
    if isinstance(sent_at, str) and sent_at:
        return sent_at if not sent_at.isdigit() else _epoch_to_iso(sent_at)
    if isinstance(sent_at, (int, float)) and not isinstance(sent_at, bool):
        return _epoch_to_iso(sent_at)
    for name in ("sent_at", "_"):
        value = request.GET.get(name, "")
        if value.isdigit():
            return _epoch_to_iso(value)
    return None


def _read_data(request, limit: int) -> tuple[bytes, dict[str, str]]:
    declared = request.META.get("CONTENT_LENGTH")
    if declared and declared.isdigit() and int(declared) > limit:
        raise payload_too_large(limit)
    if request.method == "GET":
        data = request.GET.get("data", "")
        if not data:
            raise no_data()
        return data.encode(), {}
    content_type = request.content_type or ""
    if content_type in RAW_BODY_CONTENT_TYPES:
        body = request.body
        if len(body) > limit:
            raise payload_too_large(limit)
        if not body:
            raise no_data()
        if not body.startswith(b"data="):
            return body, {}
        form = _parse_form(body)  # older posthog-js's sendBeacon: a form body sent as text
    else:
        form = _read_form(request, content_type, limit)
    data = form.pop("data", b"")
    if not data:
        raise no_data()
    return data, _text_fields(form)


def _text_fields(form: dict[str, bytes]) -> dict[str, str]:
    return {key: value.decode("utf-8", errors="replace") for key, value in form.items()}


def _read_form(request, content_type: str, limit: int) -> dict[str, bytes]:
    """Form fields as raw bytes: `data` may hold gzip, which text decoding would mangle."""
    if content_type == "application/x-www-form-urlencoded":
        body = request.body
        if len(body) > limit:
            raise payload_too_large(limit)
        return _parse_form(body)
    return {key: request.POST.get(key, "").encode() for key in request.POST}


def _parse_form(body: bytes) -> dict[str, bytes]:
    pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return {key: value.encode("latin-1") for key, value in pairs}


def lz64_decompress(data: bytes, limit: int) -> bytes:
    """LZ-String base64 (bklog_app/capture/lzstring.py) to UTF-8; spaces read as `+`, as in base64 bodies."""
    try:
        text = decompress_from_base64(data.decode("ascii").strip().replace(" ", "+"), max_chars=limit * 10)
    except UnicodeDecodeError:
        raise invalid_payload("The body is not LZ-String base64 (compression=lz64): it is not ASCII.") from None
    except LZStringError as exc:
        raise invalid_payload(f"The body could not be decompressed (compression=lz64): {exc}.") from None
    except ValueError:
        raise payload_too_large(limit) from None
    return text.encode("utf-8", "surrogatepass")


def gunzip(data: bytes, limit: int) -> bytes:
    return _decompress(data, limit, 16 + zlib.MAX_WBITS, "gunzipped")


def inflate(data: bytes, limit: int) -> bytes:
    """`Content-Encoding: deflate`: zlib-wrapped (RFC 1950, first byte 0x78) as most clients
    send it, else raw deflate (RFC 1951), as some do."""
    return _decompress(data, limit, zlib.MAX_WBITS if data[:1] == b"\x78" else -zlib.MAX_WBITS, "inflated")


def _decompress(data: bytes, limit: int, wbits: int, what: str) -> bytes:
    # A small body may expand a lot; refuse anything that grows past ten times the limit.
    inflater = zlib.decompressobj(wbits=wbits)
    try:
        out = inflater.decompress(data, limit * 10)
    except zlib.error as exc:
        raise invalid_payload(f"The body could not be {what}: {exc}.") from None
    if inflater.unconsumed_tail:
        raise payload_too_large(limit)
    return out


def parse_body(data: bytes, limit: int) -> Any:
    """JSON (NaN and Infinity read as null), else base64 of JSON or of gzipped JSON."""
    parsed = _parse_json(data)
    if parsed is not _INVALID:
        return parsed
    try:
        text = data.decode("ascii").strip().replace(" ", "+")
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (UnicodeDecodeError, binascii.Error, ValueError):
        decoded = b""
    if decoded[:2] == GZIP_MAGIC:
        decoded = gunzip(decoded, limit)
    parsed = _parse_json(decoded) if decoded else _INVALID
    if parsed is _INVALID:
        raise invalid_payload("The body is neither JSON nor base64-encoded JSON.")
    return parsed


_INVALID = object()


def _parse_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses NaN and Infinity, which browsers' SDKs can send; the standard library
    # reads them, and they are stored as null.
    try:
        return json.loads(data, parse_constant=lambda _: None)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _INVALID


def _find_token(request, form: dict, body: dict, events: list[dict]) -> str | None:
    first = events[0].get("properties")
    return find_token(request, form, body, first.get("token") if isinstance(first, dict) else None)


def find_token(request, form: dict, body: dict, *more: object) -> str | None:
    """The project token, first found wins: query `token`, `api_key`; form `api_key`, `token`;
    body `api_key`, `token`, `$token`; then `more`."""
    candidates = (
        request.GET.get("token"),
        request.GET.get("api_key"),
        form.get("api_key"),
        form.get("token"),
        body.get("api_key"),
        body.get("token"),
        body.get("$token"),
        *more,
    )
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def check_events(raw_events: list[dict], force_event: str | None) -> tuple[list[dict], int]:
    events, skipped = [], 0
    for index, event in enumerate(raw_events):
        if force_event:
            event["event"] = force_event
        if not event.get("event"):
            skipped += 1
            continue
        properties = event.get("properties")
        if properties is None:
            properties = event["properties"] = {}
        elif not isinstance(properties, dict):
            raise invalid_payload(f"Event {index}: 'properties' must be an object.", attr="properties")
        event["distinct_id"] = _distinct_id(event, properties, index)
        if event.get("uuid") is not None:
            try:
                event["uuid"] = canonical_uuid(event["uuid"])
            except ValueError:
                raise invalid_payload(
                    f"Event {index}: 'uuid' is not a valid UUID: {str(event['uuid'])[:64]!r}.",
                    attr="uuid",
                ) from None
        events.append(event)
    return events, skipped


def _distinct_id(event: dict, properties: dict, index: int) -> str:
    for candidate in (event.get("$distinct_id"), properties.get("distinct_id"), event.get("distinct_id")):
        if candidate is None:
            continue
        text = (
            candidate
            if isinstance(candidate, str)
            else orjson.dumps(candidate).decode()
            if isinstance(candidate, (dict, list))
            else str(candidate)
        )
        if text.strip():
            return text[:MAX_DISTINCT_ID_LENGTH]
        raise invalid_payload(f"Event {index}: 'distinct_id' is blank.", attr="distinct_id")
    raise invalid_payload(
        f"Event {index}: 'distinct_id' is missing; send it as distinct_id, $distinct_id or properties.distinct_id.",
        attr="distinct_id",
    )


def _epoch_to_iso(value: str | int | float) -> str | None:
    """Epoch milliseconds, or seconds when it has 11 digits or fewer, as ISO 8601."""
    if isinstance(value, str):
        if not value.isdigit():
            return None
        value = int(value)
    if value < 0:
        return None
    seconds = value / 1000 if value >= 10**11 else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


__all__ = ["CaptureError", "DecodedCapture", "decode_payload", "decode_request", "find_token"]
