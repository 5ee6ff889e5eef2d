"""bklog's Gunicorn worker: gevent's own WSGI server, held to Gunicorn's limits.

Gunicorn's `gevent` worker parses each request with Gunicorn's HTTP parser and writes its
response through Gunicorn's response object, under gevent; at capture rates that machinery is
about two thirds of the web tier's CPU (docs/performance.md, "The web tier"). gevent's own
server (`pywsgi`) does the same work in less: on the bench, 0.52 against 0.64 ms of CPU per
single-event request at 1,000 req/s. Gunicorn can run it (`gevent_pywsgi`), but then leaves its
requests alone: no worker recycling after `max_requests`, no keep-alive timeout, no request-line
or header limits, and `X-Forwarded-Proto` believed from nobody.

`Worker` keeps those, so the lean server changes nothing an operator configured
(gunicorn_config.py, GUNICORN_*):
- `max_requests` (+ jitter): the worker counts its requests and, at the limit, stops accepting
  at once and finishes what it holds; the arbiter starts another.
- `keepalive`: an idle keep-alive connection, or a client slow to send its request line and
  headers, is closed after that many seconds; 0 closes every connection after its response.
- `limit_request_line`, `limit_request_fields`, `limit_request_field_size`: a request over them
  gets a 400 and the connection is closed, as Gunicorn answers.
- `forwarded_allow_ips` with `secure_scheme_headers`: `wsgi.url_scheme` is https only when a
  trusted proxy says so. Header names with an underscore are dropped (gevent's rule, and
  Gunicorn's default), so `X_Forwarded_For` cannot pose as `X-Forwarded-For`.
- The access log goes through Gunicorn's logger (bklog_app/gunicorn_logging.py), which skips
  capture requests by default before any line is built.
"""

import ipaddress
from datetime import timedelta

import gevent
from gevent import pywsgi
from gunicorn.workers.ggevent import GeventPyWSGIWorker, GeventResponse, PyWSGIHandler

from bklog_app.gunicorn_logging import AccessLogger


class RequestOverLimit(ValueError):
    """A request line or header over Gunicorn's limits: answered 400, connection closed."""


class Handler(PyWSGIHandler):
    """One client connection: pywsgi's request loop with Gunicorn's timeout, limits and count."""

    def read_requestline(self) -> str:
        cfg = self.server.worker.cfg
        with gevent.Timeout(cfg.keepalive or None, False):
            line = self.rfile.readline(
                cfg.limit_request_line + 2 if cfg.limit_request_line else pywsgi.MAX_REQUEST_LINE
            )
            return line.decode("latin-1")
        return ""  # idle past the keep-alive timeout: close

    def read_request(self, raw_requestline: str) -> bool:
        cfg = self.server.worker.cfg
        if cfg.limit_request_line and len(raw_requestline.rstrip("\r\n")) > cfg.limit_request_line:
            raise RequestOverLimit(f"request line over {cfg.limit_request_line} bytes")
        with gevent.Timeout(cfg.keepalive or None, False):
            parsed = super().read_request(raw_requestline)
            self._check_headers(cfg)
            if not cfg.keepalive:
                self.close_connection = True
            return parsed
        raise RequestOverLimit(f"headers not received within {cfg.keepalive} s")

    def _check_headers(self, cfg) -> None:
        fields = self.headers.items()
        if len(fields) > cfg.limit_request_fields:
            raise RequestOverLimit(f"more than {cfg.limit_request_fields} header fields")
        if cfg.limit_request_field_size:
            for name, value in fields:
                if len(name) + len(value) + 2 > cfg.limit_request_field_size:
                    raise RequestOverLimit(f"header {name!r} over {cfg.limit_request_field_size} bytes")

    def _handle_client_error(self, ex):
        self.close_connection = True
        return super()._handle_client_error(ex)

    def get_environ(self) -> dict:
        environ = super().get_environ()
        cfg = self.server.worker.cfg
        if cfg.secure_scheme_headers and self.server.worker.trusts(environ.get("REMOTE_ADDR", "")):
            for header, secure_value in cfg.secure_scheme_headers.items():
                value = environ.get("HTTP_" + header.replace("-", "_").upper())
                if value is not None:
                    environ["wsgi.url_scheme"] = "https" if value == secure_value else "http"
                    break
        return environ

    def handle_one_response(self) -> None:
        super().handle_one_response()
        worker = self.server.worker
        worker.nr += 1
        if worker.alive and worker.nr >= worker.max_requests:
            worker.log.info("Autorestarting worker after current request.")
            worker.alive = False
            for server in worker.servers:
                server.close()  # new connections go to the other workers while this one drains
        if not worker.alive:
            self.close_connection = True

    def log_request(self) -> None:
        """The access line, through Gunicorn's logger, with the response headers as text (pywsgi
        keeps them as bytes, which Gunicorn's `%({header}o)s` atoms would not find)."""
        log = self.server.worker.log
        if self.environ is None:
            return  # not parsed: the error log has its line ("Invalid request")
        if isinstance(log, AccessLogger) and not log.logs(self.environ):
            return
        status = self.status.decode() if isinstance(self.status, bytes) else self.status
        headers = [(_text(name), _text(value)) for name, value in self.response_headers or ()]
        response = GeventResponse(status, headers, self.response_length)
        elapsed = timedelta(seconds=self.time_finish - self.time_start)
        log.access(response, getattr(self, "headers", {}).items(), self.environ, elapsed)


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class Server(pywsgi.WSGIServer):
    worker: "Worker"


class Worker(GeventPyWSGIWorker):
    """`worker_class = "bklog_app.web_worker.Worker"` (GUNICORN_WORKER_CLASS=pywsgi)."""

    wsgi_handler = Handler

    def init_process(self) -> None:
        allowed = self.cfg.forwarded_allow_ips
        self.trust_everyone = "*" in allowed
        self.trusted_networks = [ipaddress.ip_network(entry, strict=False) for entry in allowed if entry != "*"]
        self.servers: list[Server] = []
        super().init_process()

    def trusts(self, address: str) -> bool:
        """Whether `address` is a proxy of `forwarded_allow_ips` (addresses, networks or `*`)."""
        if self.trust_everyone:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_networks)

    def server_class(self, *args, **kwargs) -> Server:
        server = Server(*args, **kwargs)
        server.worker = self
        self.servers.append(server)
        return server
