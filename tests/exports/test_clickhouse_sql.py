"""Every export statement runs on the 18.16 server and on a current ClickHouse (chdb), and the
keyset reads mean what the exports need: exact order, filters, copies merged."""

import pytest
from chdb.session import Session

from pipeline.storage import exports as export_store
from pipeline.storage.clickhouse import execute
from pipeline.storage.events import EventRow, insert_events
from pipeline.storage.exports import EventRange, count_rows, fetch_chunk, stream_chunk
from pipeline.storage.migrate import migration_names, operations
from tests.exports.conftest import BASE_MS, keyset_order, store_events
from tests.pipeline.test_clickhouse_sql import render


@pytest.fixture(scope="module")
def chdb_events(tmp_path_factory):
    session = Session(str(tmp_path_factory.mktemp("chdb-exports")))
    session.query("CREATE DATABASE IF NOT EXISTS bklog")
    for name in migration_names():
        for sql in operations(name, "bklog"):
            session.query(sql)
    yield session
    session.cleanup()


@pytest.mark.parametrize("name", sorted(export_store.QUERIES))
def test_every_export_query_runs_on_current_clickhouse(chdb_events, name):
    sql, params = export_store.QUERIES[name]
    chdb_events.query(render(sql, params).replace("FROM events", "FROM bklog.events"), "CSV")


@pytest.mark.parametrize("name", sorted(export_store.QUERIES))
def test_every_export_query_runs_on_clickhouse_18(name):
    sql, params = export_store.QUERIES[name]
    execute(sql, params)


def _all(event_range: EventRange, limit: int) -> list[tuple]:
    """Every row of the range, read `limit` rows at a time from the last row's cursor."""
    rows, cursor = [], None
    while chunk := fetch_chunk(event_range, cursor, limit):
        rows += chunk
        cursor = (chunk[-1][4], chunk[-1][0])
    return rows


def test_chunks_follow_timestamp_then_uuid_and_resume_exactly(project):
    stored = store_events(project.id, 50)
    event_range = EventRange(project.id, BASE_MS, BASE_MS + 10**9)
    expected = [str(row.uuid) for row in keyset_order(stored)]
    for limit in (1, 7, 50, 1000):
        assert [row[0] for row in _all(event_range, limit)] == expected
    assert count_rows(event_range) == 50
    assert [row[0] for row in stream_chunk(event_range, None, 1000)] == expected


def test_range_names_and_properties_filter(project):
    stored = store_events(project.id, 40)
    after, before = BASE_MS + 5_000, BASE_MS + 30_000
    event_range = EventRange(project.id, after, before, events=("signed_up",), properties={"plan": "pro"})
    expected = [
        str(row.uuid)
        for row in keyset_order(stored)
        if after <= row.timestamp_ms < before and row.event == "signed_up" and row.properties["plan"] == "pro"
    ]
    assert expected
    assert [row[0] for row in _all(event_range, 3)] == expected
    assert count_rows(event_range) == len(expected)


def test_copies_kept_until_a_merge_are_read_once(project):
    [row] = store_events(project.id, 1)
    insert_events([row])  # the same event again, in another part
    event_range = EventRange(project.id, BASE_MS, BASE_MS + 10**6)
    assert len(fetch_chunk(event_range, None, 10)) == 1


def test_property_needle_is_how_ingestion_writes_json():
    assert export_store.property_needle("plan", "pro") == '"plan":"pro"'
    assert export_store.property_needle("n", 3) == '"n":3'
    assert export_store.property_needle("é", True) == '"é":true'


def test_stored_event_row_order_is_the_select_order():
    """file and historical exports read rows by position: uuid first, timestamp_ms fifth."""
    from pipeline.storage.events import SELECT_COLUMNS

    columns = [c.strip() for c in SELECT_COLUMNS.split(",")]
    assert columns[0] == "toString(uuid)"
    assert columns[3] == "properties"
    assert columns[4] == "timestamp_ms"
    assert EventRow.__dataclass_fields__  # the rows the tests write are what ingestion writes


@pytest.mark.parametrize("estimate", [None, 1, 10**6])
@pytest.mark.parametrize("limit", [4, 45])
def test_a_bounded_walk_reads_every_row_once_in_order_whatever_the_estimate(project, estimate, limit):
    from pipeline.exports.ranges import Walk

    # Clustered rows far apart in a year-long range: dense bursts and long empty stretches.
    stored = []
    for day in (0, 1, 200, 364):
        stored += store_events(project.id, 15 if day != 1 else 0, start_ms=BASE_MS + day * 86_400_000)
    event_range = EventRange(project.id, BASE_MS, BASE_MS + 365 * 86_400_000)
    walk = Walk.over(event_range, limit, estimate)
    read, cursor, chunks = [], None, 0
    while chunks < 200:
        bound = walk.bound(cursor)
        rows = fetch_chunk(event_range, cursor, limit, bound)
        assert len(rows) <= limit
        read += rows
        chunks += 1
        cursor = walk.after_chunk(cursor, bound, len(rows), (rows[-1][4], rows[-1][0]) if rows else None)
        if cursor is None:
            break
    assert [row[0] for row in read] == [str(row.uuid) for row in keyset_order(stored)]
    assert chunks < 200
