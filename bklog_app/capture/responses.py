"""Answers of the capture protocols that are not PostHog's v0 (Capture v1, Segment): JSON, CORS,
and `Retry-After` on the two refusals a client should retry.

Their browser clients send headers outside CORS's safelisted set (Segment's analytics.js an
`Authorization: Basic` and `X-Retry-Count`; Capture v1 its `PostHog-*` headers), so a browser
asks first with a preflight, and each protocol names the headers it allows.
"""

import time

from django.http import HttpResponse

from bklog_app.capture.views import json_response

RETRY_AFTER_OUTAGE_SECONDS = 1


def respond(request, status: int, body: bytes, *, allow_headers: str) -> HttpResponse:
    response = json_response(request, status, body, allow=allow_headers)
    retry_after = retry_after_seconds(status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def retry_after_seconds(status: int) -> int | None:
    """429: until the project's rate-limit window ends (events are counted per clock minute);
    503 (Redis unavailable, nothing stored): a second."""
    if status == 429:
        return max(1, 60 - int(time.time()) % 60)
    if status == 503:
        return RETRY_AFTER_OUTAGE_SECONDS
    return None
