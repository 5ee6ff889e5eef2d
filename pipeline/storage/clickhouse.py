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


# Server errors that mean another server is not there right now: on a cluster, the server bklog
# talks to answers, but a shard it forwards to, or ZooKeeper, does not. Codes from ClickHouse's
# ErrorCodes: SOCKET_TIMEOUT, NETWORK_ERROR, TIMEOUT_EXCEEDED, NO_ZOOKEEPER, TABLE_IS_READ_ONLY
# (a replica that lost ZooKeeper), ALL_CONNECTION_TRIES_FAILED, ALL_REPLICAS_ARE_STALE,
# UNKNOWN_STATUS_OF_INSERT, TOO_FEW_LIVE_REPLICAS, KEEPER_EXCEPTION, POCO_EXCEPTION.
OUTAGE_SERVER_CODES = frozenset({209, 210, 159, 225, 242, 279, 285, 319, 369, 999, 1000})


def make_client(database: str | None = None, timeout: float | None = None) -> Client:
    """A new client; `timeout` (seconds) for a query that may run long, instead of the usual."""
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
        send_receive_timeout=timeout or max(settings.CLICKHOUSE_TIMEOUT_SECONDS, 30),
        sync_request_timeout=settings.CLICKHOUSE_TIMEOUT_SECONDS,
        client_name="bklog",
        alt_hosts=settings.CLICKHOUSE_ALT_HOSTS or None,
        settings=cluster_settings(),
    )


def cluster_settings() -> dict[str, Any]:
    """On a cluster: an INSERT into the Distributed table returns only once every shard's part is
    written to one of its replicas (not queued on the local disk to be sent later), so the
    ingestion batch acknowledges its messages only after that. Reads and writes both go to the
    first replica of each shard that answers, in `remote_servers` order: replication between
    replicas is asynchronous, and a read from the other replica could miss a row just written.
    Every app node lists the servers in the same order (CLICKHOUSE_HOST, then
    CLICKHOUSE_ALT_HOSTS) for the same reason."""
    if not settings.CLICKHOUSE_CLUSTER:
        return {}
    return {"insert_distributed_sync": 1, "load_balancing": "in_order", "prefer_localhost_replica": 0}


def get_client() -> Client:
    client = getattr(_local, "client", None)
    key = (
        settings.CLICKHOUSE_HOST,
        settings.CLICKHOUSE_PORT,
        settings.CLICKHOUSE_ALT_HOSTS,
        settings.CLICKHOUSE_DATABASE,
        settings.CLICKHOUSE_CLUSTER,
    )
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
        raise ClickHouseUnavailable(f"ClickHouse at {_where()} is unavailable: {exc}") from exc
    except ch_errors.ServerException as exc:
        if exc.code not in OUTAGE_SERVER_CODES:
            raise
        raise ClickHouseUnavailable(f"a ClickHouse server behind {_where()} is unavailable: {exc}") from exc


def _where() -> str:
    where = f"{settings.CLICKHOUSE_HOST}:{settings.CLICKHOUSE_PORT}"
    return f"{where} (or {settings.CLICKHOUSE_ALT_HOSTS})" if settings.CLICKHOUSE_ALT_HOSTS else where


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
