"""Capture requests served beside Django's handler, not through it.

Capture is the hot path: every event an application sends is one of these requests, and the
view needs none of what Django's handler wraps around a view (sessions, CSRF, auth, messages,
clickjacking headers, the request_started/finished signals and their per-request walk over
every database connection). `CaptureFastPath` sends the capture URLs straight to the capture
view with a plain WSGIRequest, doing itself the three things of the middleware stack that
capture does need: the request id (bklog_app/request_context.py), the request metrics
(bklog_app/request_metrics.py) and a JSON 500 for an unexpected error. Every other URL goes
to Django unchanged. The capture view is the same one the URLconf routes to, so both ways in
answer alike.

Not done here, on purpose: ALLOWED_HOSTS (capture builds no URL from the Host header) and
APPEND_SLASH (the capture patterns accept the path with or without one).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

import orjson
import structlog
from django.core.handlers.wsgi import WSGIRequest
from django.db import connections
from django.http import HttpResponse

from bklog_app.capture.paths import CAPTURE_PATH
from bklog_app.capture.views import capture
from bklog_app.request_metrics import METHODS
from pipeline.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS

logger = structlog.get_logger(__name__)

VIEW = "capture"  # the URL name, so metrics read the same whichever way a request came in
SERVER_ERROR = orjson.dumps(
    {
        "type": "server_error",
        "code": "server_error",
        "detail": "The server failed to accept the events; nothing was stored. Retry later.",
        "attr": None,
    }
)


class CaptureFastPath:
    """WSGI application: capture URLs to the capture view directly, the rest to `django`."""

    def __init__(self, django: Callable):
        self.django = django

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        match = CAPTURE_PATH.match(environ.get("PATH_INFO", ""))
        if match is None:
            return self.django(environ, start_response)
        started = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        request = WSGIRequest(environ)
        try:
            response = capture(request, match["endpoint"])
        except Exception:
            logger.exception("capture request failed", path=environ.get("PATH_INFO"))
            response = HttpResponse(SERVER_ERROR, status=500, content_type="application/json")
        finally:
            request.close()
            _release_database_connection()
        response["X-Request-Id"] = request_id
        response["X-Content-Type-Options"] = "nosniff"
        method = request.method if request.method in METHODS else "other"
        HTTP_REQUESTS.labels(VIEW, method, str(response.status_code)).inc()
        HTTP_REQUEST_DURATION.labels(VIEW).observe(time.perf_counter() - started)
        body = response.content
        response["Content-Length"] = str(len(body))  # else Gunicorn sends it chunked
        start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
        # The body, not the response: closing an HttpResponse sends request_finished.
        return [body]


def _release_database_connection() -> None:
    """What request_finished does for Django's requests, for the one connection capture may
    have opened (a token's first lookup): drop it if it broke or outlived CONN_MAX_AGE."""
    connection = connections["default"]
    # Inside a transaction someone else opened (a test's), the connection is not ours to end.
    if connection.connection is not None and not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()
