"""Smoke test of devservers/: each real server starts, answers, stops and comes back.

Needs no Django: run it alone with
``python -m pytest tests/test_servers_smoke.py -p no:django --noconftest -q``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import clickhouse_driver
import clickhouse_driver.errors
import psycopg
import pytest
import redis

from devservers import ClickHouseServer, PostgresServer, RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clickhouse_server(tmp_path: Path) -> Iterator[ClickHouseServer]:
    server = ClickHouseServer(tmp_path / "clickhouse")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_server(tmp_path: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path / "postgres")
    server.start()
    yield server
    server.stop()


def test_redis_keeps_data_across_restart(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping() is True
    client.set("smoke", "value")
    assert client.get("smoke") == b"value"
    client.close()

    redis_server.restart()

    client = redis.Redis.from_url(redis_server.url)
    assert client.get("smoke") == b"value"
    client.close()


def test_clickhouse_keeps_data_while_down(clickhouse_server: ClickHouseServer) -> None:
    def connect() -> clickhouse_driver.Client:
        return clickhouse_driver.Client(
            host=clickhouse_server.host,
            port=clickhouse_server.port,
            connect_timeout=2,
            send_receive_timeout=10,
        )

    client = connect()
    [(version,)] = client.execute("SELECT version()")
    assert version.startswith("18.16")
    client.execute("CREATE DATABASE smoke")
    client.execute("CREATE TABLE smoke.events (day Date, id UInt64, name String) ENGINE = MergeTree ORDER BY (day, id)")
    client.execute(
        "INSERT INTO smoke.events (day, id, name) VALUES",
        [{"day": datetime.date(2024, 1, 2), "id": i, "name": f"e{i}"} for i in range(3)],
    )
    assert client.execute("SELECT count(), max(id) FROM smoke.events") == [(3, 2)]
    client.disconnect()

    port = clickhouse_server.port
    clickhouse_server.stop()
    assert not clickhouse_server.is_running()
    with pytest.raises((clickhouse_driver.errors.Error, OSError)):
        connect().execute("SELECT 1")

    clickhouse_server.start()
    assert clickhouse_server.port == port
    client = connect()
    assert client.execute("SELECT name FROM smoke.events ORDER BY id") == [
        ("e0",),
        ("e1",),
        ("e2",),
    ]
    client.disconnect()


def test_postgres_restarts_with_its_data(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        # pytest-django creates test_* databases: the user must be allowed to.
        conn.execute("create database test_smoke")
    with psycopg.connect(postgres_server.database_url("test_smoke")) as conn:
        conn.execute("create table t (id int)")
        conn.execute("insert into t values (7)")

    postgres_server.restart()

    with psycopg.connect(postgres_server.database_url("test_smoke")) as conn:
        assert conn.execute("select id from t").fetchall() == [(7,)]
        [(max_connections,)] = conn.execute("show max_connections").fetchall()
        assert int(max_connections) >= 200


def test_kill_then_start_again(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    server.kill()
    assert not server.is_running()
    server.start()
    assert redis.Redis.from_url(server.url).ping() is True
    server.stop()
