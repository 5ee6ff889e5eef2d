"""bklog's Gunicorn worker: gevent's own WSGI server, held to Gunicorn's settings.

Gunicorn's `gevent` worker parses each request with Gunicorn's HTTP parser and writes its
response through Gunicorn's response object, under gevent; at capture rates that machinery is
about two thirds of the web tier's CPU (docs/performance.md, "The web tier"). gevent's own
server (`pywsgi`) does the same work in less: on the bench this worker spends about 9 % less CPU
per capture request than Gunicorn's (docs/performance.md, "Capture"). Gunicorn can run pywsgi
(`gevent_pywsgi`), but then leaves its requests alone: no worker recycling after `max_requests`,
no keep-alive timeout, no request-line or header limits, `X-Forwarded-Proto` believed from
nobody, and errors written to stderr past Gunicorn's logger.

`Worker` keeps those, so the lean server changes nothing an operator configured
(gunicorn_config.py, GUNICORN_*):
- `max_requests` (+ jitter): the worker counts its requests; the one that reaches the limit is
  answered with `Connection: close`, and the worker stops accepting at once and finishes what it
  holds; the arbiter starts another.
- `keepalive`: an idle keep-alive connection, or a client slow to send its request line and
  headers, is closed after that many seconds; 0 answers every request with `Connection: close`.
- `limit_request_line` (414), `limit_request_fields` and `limit_request_field_size` (431), with
  Gunicorn's meaning of 0; at most 100 header fields whatever the limit (the standard library's
  parser). An `Expect` other than `100-continue` is 417, several `Content-Length`s or `Host`s
  400, a `Transfer-Encoding` other than `chunked` 501. Each closes the connection.
- `forwarded_allow_ips` with `secure_scheme_headers`: `wsgi.url_scheme` is https only when a
  trusted proxy (or a Unix-socket peer, as Gunicorn trusts it) says so. Header names with an
  underscore are dropped (gevent's rule, and Gunicorn's default), so `X_Forwarded_For` cannot pose
  as `X-Forwarded-For`.
- HEAD responses carry no body.
- Header fields are split by `read_headers`, not by the `email` package that
  `http.client.parse_headers` hands them to (about a tenth of the worker's CPU per capture
  request). Same limits, same result for every well-formed field; a line that is not a field
  (no colon, an empty name, space before the colon) is refused with 400, as RFC 9112 asks.
- The access log and the error log go through Gunicorn's logger (LOG_FORMAT applies); the access
  logger (bklog_app/gunicorn_logging.py) skips capture requests before any line is built.
"""

import http.client
import ipaddress
import re
from datetime import timedelta

import gevent
from gevent import pywsgi
from gunicorn.workers.ggevent import GeventPyWSGIWorker, GeventResponse, PyWSGIHandler

from bklog_app.gunicorn_logging import AccessLogger

MAX_FIELD_SIZE = 8190  # Gunicorn's limit_request_field_size when it is 0
TRUSTED_PEERS_KEPT = 10_000  # peer addresses whose trust a worker remembers (then starts afresh)


class RefusedRequest(ValueError):
    """A request this server will not read: answered with `status` and the connection closed."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason


# What http.client.parse_headers allows: fields per request, and bytes per line.
MAX_HEADER_FIELDS = http.client._MAXHEADERS
MAX_HEADER_LINE = http.client._MAXLINE
# A field name is a token (RFC 9110 5.1); a line starting with a space or tab continues a field.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def read_headers(fp, *args) -> pywsgi.OldMessage:
    """The request's header fields, read from `fp` up to the blank line, as pywsgi's
    `MessageClass` gives them (an `http.client.HTTPMessage` with `status` set when a line is too
    long). Values are what the standard parser makes of them: leading blanks and the line end
    stripped, a continuation line kept after the line end it continues."""
    message = pywsgi.OldMessage()
    fields = message._headers
    while True:
        line = fp.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            message.status = "Line too long"
            return message
        if line in (b"\r\n", b"\n", b""):
            return message
        if len(fields) >= MAX_HEADER_FIELDS:
            raise http.client.HTTPException(f"got more than {MAX_HEADER_FIELDS} headers")
        text = line.decode("iso-8859-1")
        if text[0] in " \t" and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + "\r\n" + text.rstrip("\r\n"))
            continue
        name, colon, value = text.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            raise RefusedRequest(400, "Bad Request", f"not a header field: {text[:80]!r}")
        fields.append((name, value.lstrip(" \t").rstrip("\r\n")))


class Handler(PyWSGIHandler):
    """One client connection: pywsgi's request loop with Gunicorn's timeout, limits and count."""

    MessageClass = staticmethod(read_headers)
    body_length = 0

    def handle_one_request(self):
        self.environ = None  # a request that fails to parse is not logged as the one before it
        return super().handle_one_request()

    def read_requestline(self) -> str:
        cfg = self.server.worker.cfg
        with gevent.Timeout(cfg.keepalive or None, False):
            line = self.rfile.readline((cfg.limit_request_line or pywsgi.MAX_REQUEST_LINE - 2) + 2)
            return line.decode("latin-1")
        return ""  # idle past the keep-alive timeout: close

    def read_request(self, raw_requestline: str) -> bool:
        cfg = self.server.worker.cfg
        if cfg.limit_request_line and len(raw_requestline.rstrip("\r\n")) > cfg.limit_request_line:
            raise RefusedRequest(414, "Request-URI Too Long", f"request line over {cfg.limit_request_line} bytes")
        with gevent.Timeout(cfg.keepalive or None, False):
            try:
                parsed = super().read_request(raw_requestline)
            except http.client.HTTPException as exc:  # over 100 fields, or a field over 64 KB
                raise RefusedRequest(431, "Request Header Fields Too Large", str(exc) or type(exc).__name__) from None
            self._check_headers(cfg)
            if not cfg.keepalive:
                self.close_connection = True
            return parsed
        raise RefusedRequest(400, "Bad Request", f"headers not received within {cfg.keepalive} s")

    def _check_headers(self, cfg) -> None:
        fields = self.headers.items()
        if cfg.limit_request_fields and len(fields) > cfg.limit_request_fields:
            raise RefusedRequest(431, "Request Header Fields Too Large", f"over {cfg.limit_request_fields} fields")
        size = cfg.limit_request_field_size or MAX_FIELD_SIZE
        for name, value in fields:
            if len(name) + len(value) + 2 > size:
                raise RefusedRequest(431, "Request Header Fields Too Large", f"header {name!r} over {size} bytes")
        for name in ("Content-Length", "Host"):
            if len(self.headers.get_all(name) or ()) > 1:
                raise RefusedRequest(400, "Bad Request", f"more than one {name}")
        coding = self.headers.get("Transfer-Encoding")
        if coding is not None and coding.strip().lower() != "chunked":
            raise RefusedRequest(501, "Not Implemented", f"Transfer-Encoding {coding!r}")
        expect = self.headers.get("Expect")
        if expect is not None and expect.strip().lower() != "100-continue":
            raise RefusedRequest(417, "Expectation Failed", f"Expect {expect!r}")

    def _handle_client_error(self, ex):
        self.close_connection = True
        if not isinstance(ex, RefusedRequest):
            return super()._handle_client_error(ex)
        self.server.worker.log.info("Refused a request from %s: %s", self.client_address, ex)
        head = f"HTTP/1.1 {ex.status} {ex.reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        return (f"{ex.status} {ex.reason}", head.encode("latin-1"))

    def _log_error(self, t, v, tb) -> None:
        """An application error (a 500) in Gunicorn's error log, not on stderr from gevent's hub."""
        if not issubclass(t, gevent.GreenletExit):
            self.server.worker.log.error("Error handling request %s", self.path, exc_info=(t, v, tb))

    def get_environ(self) -> dict:
        environ = super().get_environ()
        worker = self.server.worker
        cfg = worker.cfg
        peer = self.client_address
        if cfg.secure_scheme_headers and (not isinstance(peer, tuple) or worker.trusts(str(peer[0]))):
            for header, secure_value in cfg.secure_scheme_headers.items():
                value = environ.get("HTTP_" + header.replace("-", "_").upper())
                if value is not None:
                    environ["wsgi.url_scheme"] = "https" if value == secure_value else "http"
                    break
        return environ

    def handle_one_response(self) -> None:
        worker = self.server.worker
        worker.nr += 1
        if worker.alive and worker.nr >= worker.max_requests:
            worker.log.info("Autorestarting worker after current request.")
            worker.alive = False
            for server in worker.servers:
                server.close()  # new connections go to the other workers while this one drains
        if not worker.alive:
            self.close_connection = True  # before the response: it says so
        self.body_length = 0
        super().handle_one_response()

    def finalize_headers(self) -> None:
        super().finalize_headers()
        if self.command == "HEAD" and self.response_use_chunked:
            self.response_use_chunked = False
            self.response_headers = [(k, v) for k, v in self.response_headers if k.lower() != b"transfer-encoding"]
        told = any(name.lower() == b"connection" for name, _ in self.response_headers)
        if self.close_connection and not told:
            self.response_headers.append((b"Connection", b"close"))

    def _write(self, data) -> None:
        if data and self.command != "HEAD":
            self.body_length += len(data)
            super()._write(data)

    def log_request(self) -> None:
        """The access line, through Gunicorn's logger, with the response headers as text (pywsgi
        keeps them as bytes, which Gunicorn's `%({header}o)s` atoms would not find) and the body's
        length as `%(b)s`."""
        log = self.server.worker.log
        if self.environ is None:
            return  # not parsed: the error log has its line
        if isinstance(log, AccessLogger) and not log.logs(self.environ):
            return
        status = self.status.decode() if isinstance(self.status, bytes) else self.status
        headers = [(_text(name), _text(value)) for name, value in self.response_headers or ()]
        response = GeventResponse(status, headers, self.body_length)
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
        self._trusted: dict[str, bool] = {}
        self.servers: list[Server] = []
        super().init_process()

    def trusts(self, address: str) -> bool:
        """Whether `address` is a proxy of `forwarded_allow_ips` (addresses, networks or `*`).
        Remembered per address: a worker sees few peers (its proxies, or clients on keep-alive
        connections), and parsing the address took about 3 us of every request."""
        if self.trust_everyone:
            return True
        known = self._trusted.get(address)
        if known is None:
            if len(self._trusted) >= TRUSTED_PEERS_KEPT:
                self._trusted.clear()
            known = self._trusted[address] = self._check_trust(address)
        return known

    def _check_trust(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_networks)

    def server_class(self, *args, **kwargs) -> Server:
        server = Server(*args, error_log=self.log.error_log, **kwargs)
        server.worker = self
        self.servers.append(server)
        return server
