"""Every ClickHouse statement the project sends runs on the 18.16 server (the session's) and on
a current ClickHouse engine (chdb, in process)."""

import uuid

import chdb
import pytest
from chdb.session import Session
from clickhouse_driver import Client

from pipeline.storage import events as event_store
from pipeline.storage import privacy as privacy_store
from pipeline.storage.clickhouse import execute, mutation_target
from pipeline.storage.events import EventRow, insert_events
from pipeline.storage.migrate import CLUSTER_MIGRATIONS_TABLE, MIGRATIONS_TABLE, migration_names, operations


def render(sql: str, params: dict) -> str:
    """The SQL as clickhouse-driver sends it, parameters substituted client-side."""
    return Client("127.0.0.1").substitute_params(sql, params, Client("127.0.0.1").connection.context) if params else sql


@pytest.fixture(scope="module")
def chdb_session(tmp_path_factory):
    session = Session(str(tmp_path_factory.mktemp("chdb")))
    session.query("CREATE DATABASE IF NOT EXISTS bklog")
    session.query("USE bklog")
    yield session
    session.cleanup()


def test_migrations_run_on_current_clickhouse(chdb_session):
    chdb_session.query(MIGRATIONS_TABLE.format(database="bklog"))
    for name in migration_names():
        for sql in operations(name, "bklog"):
            chdb_session.query(sql)
            chdb_session.query(sql)  # idempotent: a second run changes nothing
    tables = str(chdb_session.query("SHOW TABLES FROM bklog", "CSV"))
    assert "events" in tables


def test_cluster_migrations_parse_on_current_clickhouse(chdb_session):
    """ON CLUSTER DDL needs a cluster to run (the cluster pass runs it on 18.16); a current
    ClickHouse can still check that it parses."""
    statements = [CLUSTER_MIGRATIONS_TABLE.format(database="bklog", cluster="bklog")]
    for name in migration_names():
        statements += operations(name, "bklog", cluster="bklog")
    for sql in statements:
        assert "CreateQuery" in str(chdb_session.query("EXPLAIN AST " + sql, "CSV"))


@pytest.mark.parametrize("name", sorted(event_store.QUERIES))
def test_every_query_runs_on_current_clickhouse(chdb_session, name):
    sql, params = event_store.QUERIES[name]
    chdb_session.query(render(sql, params).replace("FROM events", "FROM bklog.events"), "CSV")


@pytest.mark.parametrize("name", sorted(event_store.QUERIES))
def test_every_query_runs_on_clickhouse_18(name):
    sql, params = event_store.QUERIES[name]
    execute(sql, params)


@pytest.mark.parametrize("name", sorted(privacy_store.QUERIES))
def test_every_deletion_query_runs_on_current_clickhouse(chdb_session, name):
    sql, params = privacy_store.QUERIES[name]
    rendered = (
        render(sql, params).replace("FROM events", "FROM bklog.events").replace("TABLE events", "TABLE bklog.events")
    )
    chdb_session.query(rendered, "CSV")


@pytest.mark.parametrize("name", sorted(privacy_store.QUERIES))
def test_every_deletion_query_runs_on_clickhouse_18(name):
    sql, params = privacy_store.QUERIES[name]
    # A mutation goes to the table that holds the rows: on the cluster pass, the local tables.
    execute(sql.replace("ALTER TABLE events ", f"ALTER TABLE {mutation_target()} "), params)


def test_insert_keeps_milliseconds_on_both_engines(chdb_session):
    row = EventRow(
        uuid=uuid.uuid4(), team_id=987654, event="e", distinct_id="d", properties={"a": 1},
        timestamp_ms=1_714_539_480_123, created_at_ms=1_714_539_480_456, person_id=uuid.UUID(int=0),
        person_properties={}, elements_chain="",
    )  # fmt: skip
    insert_events([row])
    [stored] = event_store.list_events(987654)
    assert stored["timestamp"] == "2024-05-01T04:58:00.123Z"
    values = (
        f"('{row.uuid}', {row.team_id}, 'e', 'd', '{{}}', {row.timestamp_ms}, {row.created_at_ms}, "
        f"'{row.person_id}', '{{}}', '')"
    )
    chdb_session.query(f"{event_store.INSERT_EVENTS.replace('INTO events', 'INTO bklog.events')} {values}")
    result = str(chdb_session.query("SELECT timestamp_ms, timestamp FROM bklog.events WHERE team_id = 987654", "CSV"))
    assert "1714539480123" in result
    assert chdb.__version__
