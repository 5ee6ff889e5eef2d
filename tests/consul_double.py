"""A Consul agent's HTTP API, served on loopback, for tests (no Consul binary can run here).

It speaks the part of the agent API bklog uses, the way a real agent answers it:

- `PUT /v1/agent/service/register`: the body is decoded like the agent does (field names in any
  case, snake_case accepted, durations as Go strings such as "10s" or as nanoseconds) and
  checked like the agent checks it (a name, no 0.0.0.0 address, a valid port, valid meta, a
  check of exactly one type with an interval); errors are 400 with the agent's wording.
- `PUT /v1/agent/service/deregister/<id>`: 404 for an unknown id, as Consul 1.x answers.
- `GET /v1/agent/services` and `GET /v1/health/service/<name>` (`?passing` filters).
- An ACL token, when the double is given one: requests without it get 403.

Like an agent, it runs every registered HTTP check on its interval (a new check starts
`critical`; 2xx is `passing`, 429 `warning`, anything else `critical`) and removes a service
whose check has been critical for longer than its DeregisterCriticalServiceAfter.

Every request is kept in `requests`, so a test can look at exactly what a client sent.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_CHECK_TYPES = ("http", "tcp", "ttl", "grpc", "script", "args", "docker_container_id", "h2ping", "udp", "alias_service")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class AgentError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def parse_go_duration(value, field_name: str) -> float:
    """Seconds from a Go duration ("1m30s") or a number of nanoseconds, as the agent decodes them."""
    if isinstance(value, bool):
        raise AgentError(400, f"Request decode failed: {field_name}: invalid duration type bool")
    if isinstance(value, int | float):
        return value / 1e9
    if not isinstance(value, str):
        raise AgentError(400, f"Request decode failed: {field_name}: invalid duration {value!r}")
    text = value.strip()
    if text in ("0", ""):
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _DURATION_PART.findall(body)
    if not parts or "".join(number + unit for number, unit in parts) != body:
        raise AgentError(400, f'Request decode failed: time: invalid duration "{value}"')
    return sign * sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _normalise_keys(value: dict) -> dict:
    """Lower-case keys without underscores: the agent matches `DeregisterCriticalServiceAfter`,
    `deregistercriticalserviceafter` and `deregister_critical_service_after` alike."""
    return {key.replace("_", "").lower(): item for key, item in value.items()}


@dataclass
class Check:
    check_id: str
    name: str
    service_id: str
    service_name: str
    kind: str
    target: str | None  # the URL of an HTTP check
    interval: float
    timeout: float
    deregister_after: float | None
    status: str = "critical"
    output: str = ""
    critical_since: float | None = field(default_factory=time.monotonic)
    runs: int = 0

    def as_json(self, node: str) -> dict:
        return {
            "Node": node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": "",
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "Type": self.kind,
            "Definition": {
                "HTTP": self.target or "",
                "Interval": f"{self.interval:g}s",
                "Timeout": f"{self.timeout:g}s",
                "DeregisterCriticalServiceAfter": f"{self.deregister_after:g}s" if self.deregister_after else "0s",
            },
        }


@dataclass
class Service:
    service_id: str
    name: str
    address: str
    port: int
    tags: list[str]
    meta: dict[str, str]
    checks: list[Check]
    enable_tag_override: bool = False

    def as_json(self, datacenter: str) -> dict:
        return {
            "ID": self.service_id,
            "Service": self.name,
            "Tags": self.tags,
            "Meta": self.meta,
            "Port": self.port,
            "Address": self.address,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": self.enable_tag_override,
            "Datacenter": datacenter,
        }


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    status: int = 0


class ConsulAgentDouble:
    """Start with `.start()`; `.stop()` takes it down (its state is kept) and `.start()` again
    brings it back on the same port, like an agent restarted with its data directory."""

    def __init__(self, port: int = 0, *, acl_token: str | None = None, node: str = "test-node",
                 datacenter: str = "dc1", node_address: str = "127.0.0.1") -> None:  # fmt: skip
        self.port = port
        self.acl_token = acl_token
        self.node, self.datacenter, self.node_address = node, datacenter, node_address
        self.services: dict[str, Service] = {}
        self.requests: list[RecordedRequest] = []
        self.index = 1  # X-Consul-Index: raised by every change, as a blocking query would see
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._stop_checks = threading.Event()
        self._checker: threading.Thread | None = None

    # --- life cycle ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ConsulAgentDouble:
        handler = type("Handler", (_Handler,), {"agent": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="consul-double", daemon=True).start()
        self._stop_checks.clear()
        self._checker = threading.Thread(target=self._run_checks, name="consul-double-checks", daemon=True)
        self._checker.start()
        return self

    def stop(self) -> None:
        self._stop_checks.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._checker is not None:
            self._checker.join(5)

    def __enter__(self) -> ConsulAgentDouble:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    # --- helpers for tests --------------------------------------------------------------

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                result = predicate(self)
            if result:
                return result
            time.sleep(0.05)
        with self.lock:
            state = {sid: [(c.status, c.output) for c in s.checks] for sid, s in self.services.items()}
        raise AssertionError(f"consul double: no {what} within {timeout}s; services and checks: {state}")

    def requests_to(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # --- the API ------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, headers: dict, body: bytes) -> tuple[int, object]:
        if self.acl_token is not None:
            token = headers.get("x-consul-token") or (query.get("token") or [None])[0]
            if not token and headers.get("authorization", "").startswith("Bearer "):
                token = headers["authorization"][len("Bearer ") :]
            if token != self.acl_token:
                raise AgentError(403, "Permission denied: token with AccessorID '' lacks permission")
        if path == "/v1/agent/service/register":
            self._require(method, "PUT")
            self._register(_decode_object(body))
            return 200, None
        if path.startswith("/v1/agent/service/deregister/"):
            self._require(method, "PUT")
            service_id = unquote(path[len("/v1/agent/service/deregister/") :])
            with self.lock:
                if service_id not in self.services:
                    hint = "Ensure that the service ID is passed, not the service name."
                    raise AgentError(404, f'Unknown service ID "{service_id}". {hint}')
                del self.services[service_id]
                self.index += 1
            return 200, None
        if path == "/v1/agent/services":
            self._require(method, "GET")
            with self.lock:
                return 200, {sid: s.as_json(self.datacenter) for sid, s in self.services.items()}
        if path.startswith("/v1/health/service/"):
            self._require(method, "GET")
            name = unquote(path[len("/v1/health/service/") :])
            return 200, self._health(name, passing_only="passing" in query)
        raise AgentError(404, f"no handler for {method} {path} in the consul double")

    @staticmethod
    def _require(method: str, allowed: str) -> None:
        if method != allowed:
            raise AgentError(405, f"method {method} not allowed")

    def _register(self, raw: dict) -> None:
        body = _normalise_keys(raw)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise AgentError(400, "Missing service name")
        address = body.get("address") or ""
        if not isinstance(address, str):
            raise AgentError(400, "Request decode failed: Address: expected a string")
        if address in ("0.0.0.0", "::", "[::]"):
            raise AgentError(400, "Invalid service address")
        port = body.get("port", 0)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise AgentError(400, f"Request decode failed: Port: invalid port {port!r}")
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise AgentError(400, "Request decode failed: Tags: expected a list of strings")
        meta = body.get("meta") or {}
        _validate_meta(meta)
        service_id = body.get("id") or name
        if not isinstance(service_id, str):
            raise AgentError(400, "Request decode failed: ID: expected a string")

        definitions = []
        if body.get("check"):
            definitions.append(body["check"])
        definitions.extend(body.get("checks") or [])
        checks = [self._check(definition, service_id, name, index) for index, definition in enumerate(definitions)]
        with self.lock:
            self.services[service_id] = Service(
                service_id, name, address, port, tags, meta, checks, bool(body.get("enabletagoverride"))
            )
            self.index += 1

    def _check(self, raw, service_id: str, service_name: str, index: int) -> Check:
        if not isinstance(raw, dict):
            raise AgentError(400, "Request decode failed: Check: expected an object")
        check = _normalise_keys(raw)
        kinds = [kind.replace("_", "") for kind in _CHECK_TYPES if check.get(kind.replace("_", ""))]
        if len(kinds) != 1:
            raise AgentError(400, "Invalid check: Check type is not valid")
        kind = kinds[0]
        interval = parse_go_duration(check.get("interval", 0), "Interval")
        timeout = parse_go_duration(check.get("timeout", "10s"), "Timeout") or 10.0
        deregister = parse_go_duration(check.get("deregistercriticalserviceafter", 0), "DeregisterCriticalServiceAfter")
        if kind != "ttl" and interval <= 0:
            kinds_with_interval = "Script, HTTP, H2PING, TCP, UDP or GRPC"
            raise AgentError(400, f"Invalid check: Interval must be > 0 for {kinds_with_interval} checks")
        if kind == "http":
            url = urlsplit(str(check["http"]))
            if url.scheme not in ("http", "https") or not url.hostname:
                raise AgentError(400, f'Invalid check: invalid HTTP check URL "{check["http"]}"')
        suffix = "" if index == 0 else f":{index + 1}"
        return Check(
            check_id=check.get("checkid") or check.get("id") or f"service:{service_id}{suffix}",
            name=check.get("name") or f"Service '{service_name}' check",
            service_id=service_id,
            service_name=service_name,
            kind=kind,
            target=check.get("http"),
            interval=interval,
            timeout=timeout,
            deregister_after=deregister or None,
        )

    def _health(self, name: str, passing_only: bool) -> list[dict]:
        node = {"ID": "00000000-0000-0000-0000-000000000001", "Node": self.node, "Address": self.node_address,
                "Datacenter": self.datacenter}  # fmt: skip
        serf = {"Node": self.node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
                "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "", "Type": ""}  # fmt: skip
        entries = []
        with self.lock:
            for service in self.services.values():
                if service.name != name:
                    continue
                checks = [serf, *(check.as_json(self.node) for check in service.checks)]
                if passing_only and any(check["Status"] != "passing" for check in checks):
                    continue
                entries.append({"Node": node, "Service": service.as_json(self.datacenter), "Checks": checks})
        return entries

    # --- the check runner ---------------------------------------------------------------

    def _run_checks(self) -> None:
        next_run: dict[str, float] = {}
        while not self._stop_checks.wait(0.05):
            now = time.monotonic()
            with self.lock:
                due = [
                    (service, check)
                    for service in self.services.values()
                    for check in service.checks
                    if check.kind == "http" and next_run.get(f"{service.service_id}/{check.check_id}", 0) <= now
                ]
            for service, check in due:
                next_run[f"{service.service_id}/{check.check_id}"] = now + check.interval
                status, output = _http_check(check.target, check.timeout)
                with self.lock:
                    check.runs += 1
                    check.status, check.output = status, output
                    if status == "critical":
                        check.critical_since = check.critical_since or time.monotonic()
                    else:
                        check.critical_since = None
            self._reap()

    def _reap(self) -> None:
        now = time.monotonic()
        with self.lock:
            for service_id, service in list(self.services.items()):
                for check in service.checks:
                    if (
                        check.deregister_after
                        and check.critical_since is not None
                        and now - check.critical_since > check.deregister_after
                    ):
                        del self.services[service_id]
                        self.index += 1
                        break


def _http_check(url: str, timeout: float) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"User-Agent": "Consul Health Check", "Accept": "text/plain, */*"})
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            code, text = response.status, response.read(4096).decode(errors="replace")
    except urllib.error.HTTPError as error:
        code, text = error.code, error.read(4096).decode(errors="replace")
    except Exception as exc:
        return "critical", f'Get "{url}": {exc}'
    output = f"HTTP GET {url}: {code} Output: {text}"
    if 200 <= code < 300:
        return "passing", output
    if code == 429:
        return "warning", output
    return "critical", output


def _decode_object(body: bytes) -> dict:
    try:
        value = json.loads(body or b"null")
    except ValueError as exc:
        raise AgentError(400, f"Request decode failed: {exc}") from None
    if not isinstance(value, dict):
        raise AgentError(400, "Request decode failed: expected a JSON object")
    return value


def _validate_meta(meta) -> None:
    if not isinstance(meta, dict):
        raise AgentError(400, "Request decode failed: Meta: expected an object")
    if len(meta) > 64:
        raise AgentError(400, "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs")
    for key, value in meta.items():
        if not isinstance(value, str):
            raise AgentError(400, f"Request decode failed: Meta[{key}]: expected a string")
        if not _META_KEY.match(key):
            raise AgentError(400, f"Invalid Service Meta: Key contains invalid characters: {key!r}")
        if len(key) > 128:
            raise AgentError(400, f"Invalid Service Meta: Key is too long (limit: 128 characters): {key!r}")
        if key.startswith("consul-"):
            raise AgentError(400, f"Invalid Service Meta: Key prefix 'consul-' is reserved for internal use: {key!r}")
        if len(value) > 512:
            raise AgentError(400, f"Invalid Service Meta: Value is too long (limit: 512 characters): {key!r}")


class _Handler(BaseHTTPRequestHandler):
    agent: ConsulAgentDouble
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        query = parse_qs(url.query, keep_blank_values=True)
        record = RecordedRequest(self.command, url.path, query, headers, body)
        try:
            status, payload = self.agent.handle(self.command, url.path, query, headers, body)
            data = b"" if payload is None else json.dumps(payload).encode()
            content_type = "application/json"
        except AgentError as error:
            status, data, content_type = error.status, error.reason.encode(), "text/plain; charset=utf-8"
        record.status = status
        with self.agent.lock:
            self.agent.requests.append(record)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Consul-Index", str(self.agent.index))
        self.send_header("X-Consul-KnownLeader", "true")
        self.send_header("X-Consul-LastContact", "0")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = _serve

    def log_message(self, *_args) -> None:
        pass
