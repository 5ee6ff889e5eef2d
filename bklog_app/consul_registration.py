"""Registers the web tier in Consul from Gunicorn's hooks (docs/contracts.md#operations), without ever holding it up.

`when_ready` starts a `ConsulRegistrar`: a daemon thread that registers the service with the
local Consul agent, retrying with doubling back-off (capped at CONSUL_RETRY_MAX_SECONDS) while
the agent is down or slow, and afterwards re-registers if the agent has lost the service (an
agent restarted without its data directory). Gunicorn serves requests from the start either
way. `on_exit` stops the thread and deregisters, once, with a short timeout.

Settings are the CONSUL_* variables in bklog_app/settings.py (README, "Configuration").
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import structlog

logger = structlog.get_logger(__name__)

CHECK_PATH = "/health/ready"
ANY_ADDRESSES = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class ServiceDefinition:
    """What is registered: built from settings and the port Gunicorn actually listens on."""

    name: str
    service_id: str
    address: str
    port: int
    tags: list[str]
    meta: dict[str, str]
    check: dict[str, str] = field(default_factory=dict)

    def register_kwargs(self) -> dict:
        return {
            "name": self.name,
            "service_id": self.service_id,
            "address": self.address,
            "port": self.port,
            "tags": self.tags,
            "meta": self.meta,
            "check": self.check,
        }


def service_definition(bind_host: str, port: int, settings=None) -> ServiceDefinition:
    """The service for a Gunicorn listening on `bind_host:port`.

    The advertised address is CONSUL_SERVICE_ADDRESS, else the address Gunicorn is bound to,
    else (bound to every interface) this host's routable address: never 0.0.0.0, which other
    machines cannot reach.
    """
    import consul

    settings = settings or django_settings()
    address = settings.CONSUL_SERVICE_ADDRESS or advertised_address(bind_host)
    hostname = socket.gethostname()
    check_url = f"http://{_url_host(address)}:{port}{CHECK_PATH}"
    return ServiceDefinition(
        name=settings.CONSUL_SERVICE_NAME,
        service_id=f"{settings.CONSUL_SERVICE_NAME}-{hostname}-{port}",
        address=address,
        port=port,
        tags=list(settings.CONSUL_SERVICE_TAGS),
        meta={"version": settings.VERSION, "hostname": hostname},
        check={
            **consul.Check.http(
                check_url,
                interval=settings.CONSUL_CHECK_INTERVAL,
                timeout=settings.CONSUL_CHECK_TIMEOUT,
                deregister=settings.CONSUL_DEREGISTER_CRITICAL_AFTER,
            ),
            "name": f"{settings.CONSUL_SERVICE_NAME} readiness ({CHECK_PATH})",
        },
    )


def advertised_address(bind_host: str) -> str:
    """The bound address when it is a specific one, else this host's first routable address."""
    host = bind_host.strip("[]")
    if host not in ANY_ADDRESSES and host != "localhost":
        return host
    if host == "localhost":
        return "127.0.0.1"
    for family, _, _, _, sockaddr in _addresses_of(socket.gethostname()):
        candidate = sockaddr[0]
        if family == socket.AF_INET and not candidate.startswith("127."):
            return candidate
    for family, _, _, _, sockaddr in _addresses_of(socket.getfqdn()):
        if family == socket.AF_INET and not sockaddr[0].startswith("127."):
            return sockaddr[0]
    raise RuntimeError(
        "Cannot tell which address other machines reach this host at; set CONSUL_SERVICE_ADDRESS "
        "to the address to advertise in Consul."
    )


def _addresses_of(name: str) -> list:
    try:
        return socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def django_settings():
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bklog_app.settings")
    from django.conf import settings

    return settings


def consul_client(settings=None):
    """A py-consul client for the agent at CONSUL_HTTP_ADDR, with the ACL token and TLS from env."""
    import consul

    settings = settings or django_settings()
    address = settings.CONSUL_HTTP_ADDR
    parts = urlsplit(address if "//" in address else f"//{address}")
    scheme = parts.scheme or ("https" if settings.CONSUL_HTTP_SSL else "http")
    verify: bool | str = settings.CONSUL_HTTP_SSL_VERIFY
    if verify and settings.CONSUL_CACERT:
        verify = settings.CONSUL_CACERT
    cert = None
    if settings.CONSUL_CLIENT_CERT:  # a file with both, or a certificate and its key
        key = settings.CONSUL_CLIENT_KEY
        cert = (settings.CONSUL_CLIENT_CERT, key) if key else settings.CONSUL_CLIENT_CERT
    return consul.Consul(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (443 if scheme == "https" else 8500),
        scheme=scheme,
        token=settings.CONSUL_HTTP_TOKEN or None,
        verify=verify,
        cert=cert,
        connections_timeout=settings.CONSUL_TIMEOUT_SECONDS,
    )


class ConsulRegistrar:
    """Keeps one service registered from a background thread; `stop()` deregisters it."""

    def __init__(self, service: ServiceDefinition, client, *, retry_max_seconds: float = 30.0,
                 resync_seconds: float = 60.0) -> None:  # fmt: skip
        self.service = service
        self.client = client
        self.retry_max_seconds = retry_max_seconds
        self.resync_seconds = resync_seconds
        self.registered = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consul-registration", daemon=True)

    def start(self) -> ConsulRegistrar:
        self._thread.start()
        return self

    def _run(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            try:
                if not self.registered.is_set() or not self._still_registered():
                    self._register()
                delay = 1.0
                self._stopping.wait(self.resync_seconds)
            except Exception as exc:  # never let the thread die: Consul may come back
                self.registered.clear()
                logger.warning(
                    "consul registration failed; retrying in the background (Gunicorn keeps serving)",
                    service_id=self.service.service_id,
                    agent=_agent_of(self.client),
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=delay,
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, self.retry_max_seconds)

    def _register(self) -> None:
        self.client.agent.service.register(**self.service.register_kwargs())
        self.registered.set()
        logger.info(
            "registered in consul",
            service=self.service.name,
            service_id=self.service.service_id,
            address=self.service.address,
            port=self.service.port,
            check=self.service.check.get("http"),
        )

    def _still_registered(self) -> bool:
        if self.service.service_id in self.client.agent.services():
            return True
        logger.warning("consul agent lost the service; registering again", service_id=self.service.service_id)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop retrying and deregister. Errors are logged, never raised: Gunicorn is exiting."""
        self._stopping.set()
        self._thread.join(timeout)
        try:
            self.client.agent.service.deregister(self.service.service_id)
        except Exception as exc:
            level = logger.info if not self.registered.is_set() else logger.warning
            level(
                "consul deregistration failed; the agent removes the service once its check has "
                "been critical for CONSUL_DEREGISTER_CRITICAL_AFTER",
                service_id=self.service.service_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        self.registered.clear()
        logger.info("deregistered from consul", service_id=self.service.service_id)


def _agent_of(client) -> str:
    http = getattr(client, "http", None)
    return getattr(http, "base_uri", "?")


# --- Gunicorn hooks (called from gunicorn_config.py) -------------------------------------

_registrar: ConsulRegistrar | None = None


def on_gunicorn_ready(server) -> None:
    """Start registering in the background. Never raises: a Consul problem must not stop Gunicorn."""
    global _registrar
    try:
        settings = django_settings()
        if not settings.CONSUL_ENABLED:
            logger.info("consul registration is off (CONSUL_ENABLED=false)")
            return
        host, port = gunicorn_listen_address(server)
        service = service_definition(host, port, settings)
        _registrar = ConsulRegistrar(
            service, consul_client(settings), retry_max_seconds=settings.CONSUL_RETRY_MAX_SECONDS
        ).start()
    except Exception:
        logger.exception("consul registration could not start; Gunicorn keeps serving without it")


def on_gunicorn_exit(server) -> None:
    global _registrar
    if _registrar is not None:
        _registrar.stop()
        _registrar = None


def gunicorn_listen_address(server) -> tuple[str, int]:
    """The host and port of Gunicorn's first TCP listener (the real port even for a bind on :0)."""
    for listener in getattr(server, "LISTENERS", []):
        address = listener.sock.getsockname()
        if isinstance(address, tuple):
            return str(address[0]), int(address[1])
    raise RuntimeError("Gunicorn has no TCP listener (bound to a unix socket?); Consul needs a host and port.")
