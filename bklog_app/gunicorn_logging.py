"""Gunicorn's logger, minus the access line of each capture request (by default).

Capture requests come by the thousand per second, each already counted by status in
bklog_http_requests_total and, when refused with a 5xx, logged by the capture view; a line each
in the access log cost about a fifth of the web tier's CPU. GUNICORN_ACCESSLOG_CAPTURE=true
logs them too. Every other request gets its access line as before.
"""

import os

from gunicorn.glogging import Logger

from bklog_app.capture.paths import CAPTURE_PATH


class AccessLogger(Logger):
    log_capture = os.environ.get("GUNICORN_ACCESSLOG_CAPTURE", "false").lower() in ("1", "true", "yes")

    def logs(self, environ: dict) -> bool:
        """Whether this request gets an access line."""
        return self.log_capture or not CAPTURE_PATH.match(environ.get("PATH_INFO", ""))

    def access(self, resp, req, environ, request_time) -> None:
        if self.logs(environ):
            super().access(resp, req, environ, request_time)
