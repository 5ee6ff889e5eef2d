"""Capture requests served beside Django's handler, not through it.

Capture is the hot path: every event an application sends is one of these requests, and the
view needs none of what Django's handler wraps around a view (sessions, CSRF, auth, messages,
clickjacking headers, the request_started/finished signals and their per-request walk over
every database connection), nor Django's request and response objects. `CaptureFastPath` reads
the capture URLs' WSGI environ through `CaptureRequest` (the few request attributes the capture
code uses), answers with the capture view's `answer`, and does itself the three things of the
middleware stack that capture does need: the request id (bklog_app/request_context.py), the
request metrics (bklog_app/request_metrics.py) and a JSON 500 for an unexpected error. Every
other URL goes to Django unchanged. The URLconf's capture view answers with the same `answer`,
so both ways in answer alike (tests/bklog_app/test_capture_api.py runs every test both ways).

Not done here, on purpose: ALLOWED_HOSTS (capture builds no URL from the Host header) and
APPEND_SLASH (the capture patterns accept the path with or without one).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from functools import cache, cached_property
from http import HTTPStatus
from urllib.parse import parse_qsl

import orjson
import structlog
from django.core.handlers.wsgi import WSGIRequest
from django.db import connections

from bklog_app.capture.paths import CAPTURE_PATH
from bklog_app.capture.views import answer, cors_headers
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
    """WSGI application: capture URLs to the capture view's `answer` directly, the rest to `django`."""

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
        request = CaptureRequest(environ)
        try:
            status, body = answer(request, match["endpoint"])
        except Exception:
            logger.exception("capture request failed", path=environ.get("PATH_INFO"))
            status, body = 500, SERVER_ERROR
        finally:
            request.close()
            _release_database_connection()
        headers = [("Content-Length", str(len(body))), ("X-Request-Id", request_id), NOSNIFF]
        if body:
            headers.append(JSON)
        headers += cors_headers(request)
        method = request.method if request.method in METHODS else "other"
        HTTP_REQUESTS.labels(VIEW, method, str(status)).inc()
        HTTP_REQUEST_DURATION.labels(VIEW).observe(time.perf_counter() - started)
        start_response(_status_line(status), headers)
        return [body]


class CaptureRequest:
    """What the capture code reads of a request (bklog_app/capture/decoding.py, views.py), from
    the WSGI environ as Django's WSGIRequest would give it: method, META, GET, headers,
    content_type, body, POST."""

    def __init__(self, environ: dict):
        self.environ = self.META = environ
        self.method = environ["REQUEST_METHOD"].upper()
        self.headers = _Headers(environ)
        self._django: WSGIRequest | None = None

    @cached_property
    def GET(self) -> dict[str, str]:
        # PEP 3333 hands the query string over as latin-1; its bytes are UTF-8, as Django reads them.
        query = self.environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8", "replace")
        return dict(parse_qsl(query, keep_blank_values=True))  # the last value of a repeated key, as QueryDict.get

    @cached_property
    def content_type(self) -> str:
        return self.environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()

    @cached_property
    def body(self) -> bytes:
        # No valid Content-Length reads as an empty body, as in Django.
        declared = self.environ.get("CONTENT_LENGTH") or ""
        length = int(declared) if declared.isdigit() else 0
        return self.environ["wsgi.input"].read(length) if length else b""

    @property
    def POST(self):
        """Multipart forms only (decoding reads the others from `body`): Django's parser."""
        if self._django is None:
            self._django = WSGIRequest(self.environ)
        return self._django.POST

    def close(self) -> None:
        if self._django is not None:
            self._django.close()  # uploaded files' temporary storage


class _Headers:
    """`request.headers.get(name)` over the environ, as Django's HttpHeaders reads it."""

    def __init__(self, environ: dict):
        self.environ = environ

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        return self.environ.get(key, default)


NOSNIFF = ("X-Content-Type-Options", "nosniff")
JSON = ("Content-Type", "application/json")


@cache
def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def _release_database_connection() -> None:
    """What request_finished does for Django's requests, for the one connection capture may
    have opened (a token's first lookup): drop it if it broke or outlived CONN_MAX_AGE."""
    connection = connections["default"]
    # Inside a transaction someone else opened (a test's), the connection is not ours to end.
    if connection.connection is not None and not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()
