"""The capture endpoints: decode, hand to the pipeline (token, rate limit, enqueue), answer.

A 200 means the request's events are in Redis, in a Celery message the request may share with
others this process received within CAPTURE_LINGER_MS (pipeline/ingestion/coalesce.py). If
Redis does not take the message, the answer is 503 and nothing was enqueued, so the SDK's retry
is safe.
"""

import ipaddress
from datetime import UTC, datetime

import orjson
import structlog
from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from bklog_app.capture.decoding import decode_request
from bklog_app.capture.errors import CaptureError, invalid_api_key, missing_api_key, rate_limited, server_error
from pipeline.ingestion.capture import RateLimited, Unavailable, UnknownToken, accept

logger = structlog.get_logger(__name__)

BATCH_PATHS = ("batch",)
ACCEPTED = orjson.dumps({"status": 1})
METHOD_NOT_ALLOWED = orjson.dumps(
    {"type": "validation_error", "code": "method_not_allowed", "detail": "Use POST (or GET with ?data=).", "attr": None}
)


@csrf_exempt
def capture(request, endpoint: str = "e") -> HttpResponse:
    """The URLconf's way in; Gunicorn's goes through bklog_app/capture/fastpath.py. Both answer with `answer`."""
    return _response(request, *answer(request, endpoint))


def answer(request, endpoint: str) -> tuple[int, bytes]:
    """The status and JSON body for a capture request (`request`: Django's, or the fast path's)."""
    if request.method == "OPTIONS":
        return 204, b""
    if request.method not in ("GET", "POST"):
        return 405, METHOD_NOT_ALLOWED
    try:
        _capture(request, endpoint)
    except CaptureError as error:
        return refusal(error)
    return 200, ACCEPTED


def _capture(request, endpoint: str) -> None:
    limit = settings.CAPTURE_MAX_BATCH_BYTES if endpoint in BATCH_PATHS else settings.CAPTURE_MAX_EVENT_BYTES
    decoded = decode_request(request, limit=limit, force_event="$identify" if endpoint == "engage" else None)
    accept_events(request, decoded.token, decoded.events, decoded.sent_at)


def accept_events(request, token: str | None, events: list[dict], sent_at: str | None) -> None:
    """Hand the decoded request to the pipeline (pipeline/ingestion/capture.py), which checks the
    token and the rate limit and enqueues the events (returns once they are in Redis); its
    refusals become the capture API's errors."""
    if token is None:
        raise missing_api_key()
    try:
        accept(token, events, ip=client_ip(request), sent_at=sent_at, now=datetime.now(UTC))
    except UnknownToken:
        raise invalid_api_key() from None
    except RateLimited as refused:
        raise rate_limited(refused.per_minute) from None
    except Unavailable as exc:
        raise server_error(f"{exc}; {exc.advice}") from exc


def refusal(error: CaptureError) -> tuple[int, bytes]:
    if error.status >= 500:
        logger.error("capture refused", status=error.status, code=error.code, detail=error.detail)
    return error.status, orjson.dumps(error.body())


def error_response(request, error: CaptureError) -> HttpResponse:
    return _response(request, *refusal(error))


def _response(request, status: int, body: bytes) -> HttpResponse:
    return json_response(request, status, body)


def json_response(
    request, status: int, body: bytes, *, allow: str | None = None, content_type: str = "application/json"
) -> HttpResponse:
    """An SDK endpoint's answer: `body` (none for an empty one) with the CORS headers of
    `cors_headers`, whose base list of allowed headers is `allow` (the protocol's own)."""
    response = HttpResponse(body, status=status, content_type=content_type) if body else HttpResponse(status=status)
    for name, value in cors_headers(request, allow):
        response[name] = value
    return response


def client_ip(request) -> str | None:
    """The socket peer, or the X-Forwarded-For address a trusted proxy reported for it."""
    peer = request.META.get("REMOTE_ADDR")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if not forwarded or not _is_trusted(peer):
        return peer
    # Walk from the nearest hop back; the first address not a trusted proxy is the client.
    for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        if not _is_trusted(hop):
            return hop
    return peer


def _is_trusted(address: str | None) -> bool:
    if not address or not settings.CAPTURE_TRUSTED_PROXIES:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(proxy, strict=False) for proxy in settings.CAPTURE_TRUSTED_PROXIES)


CORS_ALLOWED_HEADERS = "X-Requested-With, Content-Type, Content-Encoding"


def cors_headers(request, allow: str | None = None) -> list[tuple[str, str]]:
    """Browsers' SDKs post from other origins, with credentials, and may send headers of their
    own (posthog-js's `request_headers` option, tracing headers): a preflight is granted the
    headers it asks for, beside `allow` (default CORS_ALLOWED_HEADERS; a protocol with headers of
    its own names them)."""
    origin = request.headers.get("Origin")
    if not origin:
        return []
    allowed = allow or CORS_ALLOWED_HEADERS
    requested = request.headers.get("Access-Control-Request-Headers")
    if requested:
        allowed = f"{allowed}, {requested}"
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
        ("Access-Control-Allow-Headers", allowed),
        ("Vary", "Origin"),
    ]
