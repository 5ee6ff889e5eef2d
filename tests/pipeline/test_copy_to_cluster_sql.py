"""The statements of `copy_events_to_cluster` (pipeline/storage/copy_to_cluster.py) run on the 18.16
server, reading that server itself through remote(), and on a current ClickHouse (chdb), which
reads its own events instead: chdb's remote() cannot talk to 18.16. The DROP PARTITION ON CLUSTER,
and what the copy does, are tested on the cluster (tests/cluster/test_copy_to_cluster.py)."""

import uuid
from datetime import UTC, datetime

import pytest
from chdb.session import Session
from django.conf import settings

from pipeline.storage import copy_to_cluster
from pipeline.storage.clickhouse import execute
from pipeline.storage.events import EventRow, insert_events
from pipeline.storage.migrate import migration_names, operations
from tests.conftest import SERVERS
from tests.pipeline.test_clickhouse_sql import render

EMPTY_MONTH = 197001  # nothing is stored there: the copies insert no rows
# A day into the month: the same month whatever the server's time zone. No other test uses 2012.
JANUARY_2012_MS = int(datetime(2012, 1, 2, tzinfo=UTC).timestamp() * 1000)
MARCH_2012_MS = int(datetime(2012, 3, 2, tzinfo=UTC).timestamp() * 1000)


def params(name: str) -> dict:
    _sql, example = copy_to_cluster.QUERIES[name]
    source = f"127.0.0.1:{SERVERS['clickhouse'].port}"
    return {**example, "source": source, "source_database": settings.CLICKHOUSE_DATABASE, "month": EMPTY_MONTH}


@pytest.fixture(scope="module")
def chdb_events(tmp_path_factory):
    session = Session(str(tmp_path_factory.mktemp("chdb-copy")))
    session.query("CREATE DATABASE IF NOT EXISTS bklog")
    for name in migration_names():
        for sql in operations(name, "bklog"):
            session.query(sql)
    session.query("USE bklog")
    yield session
    session.cleanup()


@pytest.mark.parametrize("name", sorted(copy_to_cluster.QUERIES))
def test_every_copy_query_runs_on_current_clickhouse(chdb_events, name):
    sql, _example = copy_to_cluster.QUERIES[name]
    local = sql.replace(copy_to_cluster.SOURCE_EVENTS, "bklog.events").replace("INTO events", "INTO bklog.events")
    chdb_events.query(render(local.replace("FROM events", "FROM bklog.events"), params(name)), "CSV")


@pytest.mark.parametrize("name", sorted(copy_to_cluster.QUERIES))
def test_every_copy_query_runs_on_clickhouse_18(name):
    sql, _example = copy_to_cluster.QUERIES[name]
    execute(sql, params(name))


def test_source_months_counts_the_events_of_each_month_partition():
    rows = [
        EventRow(uuid.uuid4(), 8_800_002, "e", "d", {}, stamp, stamp, uuid.UUID(int=0), {}, "")
        for stamp in [JANUARY_2012_MS + i * 3_600_000 for i in range(5)] + [MARCH_2012_MS + 3_600_000] * 2
    ]
    insert_events(rows)
    months = dict(execute(copy_to_cluster.SOURCE_MONTHS, params("source_months")))
    assert (months[201201], months[201203], months.get(201202)) == (5, 2, None)
