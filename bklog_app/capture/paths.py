"""The capture URLs, in one place: the URLconf, the fast path (fastpath.py) and Gunicorn's
access logger (bklog_app/gunicorn_logging.py) all recognise them by this pattern. Imports
nothing from Django, so Gunicorn's master can use it before Django is set up."""

import re

# PostHog's capture paths; the endpoint decides the size limit and (engage) the event name.
CAPTURE_ENDPOINTS = r"(?P<endpoint>e|capture|track|batch|engage|i/v0/e)"
CAPTURE_PATH = re.compile(rf"^/{CAPTURE_ENDPOINTS}/?$")
