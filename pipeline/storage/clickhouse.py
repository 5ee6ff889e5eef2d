"""One ClickHouse connection per thread, configured from settings.

clickhouse-driver's Client is not thread-safe, so each thread (Gunicorn thread, Celery pool
process) gets its own. Connection failures surface as `ClickHouseUnavailable`, which callers
treat as a dependency outage (retry), never as bad data (dead letter).
"""

import socket
import threading
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors
from django.conf import settings

_local = threading.local()


class ClickHouseUnavailable(Exception):
    """ClickHouse could not be reached or did not answer in time; try again later."""


# Errors that mean "the server is not there right now" rather than "this query is wrong".
OUTAGE_ERRORS = (
    ch_errors.NetworkError,
    ch_errors.SocketTimeoutError,
    EOFError,
    ConnectionError,
    socket.timeout,
    OSError,
)


def make_client(database: str | None = None) -> Client:
    return Client(
        host=settings.CLICKHOUSE_HOST,
        port=settings.CLICKHOUSE_PORT,
        database=settings.CLICKHOUSE_DATABASE if database is None else database,
        user=settings.CLICKHOUSE_USER,
        password=settings.CLICKHOUSE_PASSWORD,
        secure=settings.CLICKHOUSE_SECURE,
        verify=bool(settings.CLICKHOUSE_CA) or settings.CLICKHOUSE_SECURE,
        ca_certs=settings.CLICKHOUSE_CA or None,
        connect_timeout=settings.CLICKHOUSE_TIMEOUT_SECONDS,
        send_receive_timeout=max(settings.CLICKHOUSE_TIMEOUT_SECONDS, 30),
        sync_request_timeout=settings.CLICKHOUSE_TIMEOUT_SECONDS,
        client_name="bklog",
    )


def get_client() -> Client:
    client = getattr(_local, "client", None)
    key = (settings.CLICKHOUSE_HOST, settings.CLICKHOUSE_PORT, settings.CLICKHOUSE_DATABASE)
    if client is None or getattr(_local, "key", None) != key:
        client = _local.client = make_client()
        _local.key = key
    return client


def execute(sql: str, params: Any = None, **kwargs: Any) -> Any:
    """Run one statement; a lost connection is dropped so the next call reconnects."""
    client = get_client()
    try:
        return client.execute(sql, params, **kwargs)
    except OUTAGE_ERRORS as exc:
        client.disconnect()
        raise ClickHouseUnavailable(
            f"ClickHouse at {settings.CLICKHOUSE_HOST}:{settings.CLICKHOUSE_PORT} is unavailable: {exc}"
        ) from exc


def reset() -> None:
    client = getattr(_local, "client", None)
    if client is not None:
        client.disconnect()
    _local.client = None


def mutation_target(table: str = "events") -> str:
    """Where an `ALTER TABLE ... DELETE` (a mutation) on `table` goes: the table itself on one
    server; on a cluster, the replicated local table on every shard (the Distributed table
    holds no rows, so it cannot be mutated)."""
    cluster = settings.CLICKHOUSE_CLUSTER
    return f"{table}_local ON CLUSTER {cluster}" if cluster else table
