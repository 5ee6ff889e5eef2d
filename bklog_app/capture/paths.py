"""The capture URLs, in one place: the URLconf, the fast path (fastpath.py) and Gunicorn's
access logger (bklog_app/gunicorn_logging.py) all recognise them by this pattern. Imports
nothing from Django, so Gunicorn's master can use it before Django is set up."""

import re

# PostHog's capture paths; the endpoint decides the size limit and (engage) the event name.
CAPTURE_ENDPOINTS = r"(?P<endpoint>e|capture|track|batch|engage|i/v0/e)"
CAPTURE_PATH = re.compile(rf"^/{CAPTURE_ENDPOINTS}/?$")

# The other capture protocols, served through the URLconf only: Segment's tracking API (its long
# paths, and analytics.js's one-letter ones: /v1/t, /v1/i, ..., the batched /v1/b and its own
# metrics /v1/m), and PostHog's Capture v1.
SEGMENT_ENDPOINTS = r"v1/(?P<kind>batch|track|identify|alias|page|screen|group|[tipagsbm])"
CAPTURE_V1_ENDPOINT = r"i/v1/analytics/events"
