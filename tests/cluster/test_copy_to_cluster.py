"""`manage.py copy_events_to_cluster`: a one-server ClickHouse (started here, holding a few thousand
events over four months) grown into the test cluster; a second run skips, an interrupted month is
dropped and copied again, and the command refuses what it cannot do, saying why.

The copy writes into a database of its own on the cluster, not the one the rest of the session
uses: ClickHouse 18.16 can crash (a segfault in `ReplicatedMergeTreeQueue::tryFinalizeMutations`)
when a mutation meets a partition dropped on one of the replicas, and the privacy tests mutate
the session's `events_local` (docs/operations.md#growing-from-one-node-to-the-cluster).
"""

import io
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
from clickhouse_driver import Client
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

from devservers import ClickHouseServer
from pipeline.storage import clickhouse
from pipeline.storage.copy_to_cluster import COPY_MONTH, DROP_CLUSTER_MONTH
from pipeline.storage.events import INSERT_EVENTS
from pipeline.storage.migrate import migrate, migration_names, operations
from tests.conftest import ROOT, SERVERS, process_env

pytestmark = [
    pytest.mark.skipif("cluster" not in SERVERS, reason="cluster topology only (BKLOG_TEST_TOPOLOGY=cluster)"),
    pytest.mark.slow,
]

TEAM = 8_800_001
COPY_DATABASE = "bklog_copy_test"
MONTHS = {201101: 900, 201102: 1_100, 201103: 700, 201104: 1_300}
PERSONS = [uuid.uuid4() for _ in range(40)]
ROWS = """
SELECT toString(uuid), team_id, event, distinct_id, properties, timestamp_ms, created_at_ms, toString(person_id)
FROM events WHERE team_id = %(team)s ORDER BY timestamp_ms, toString(uuid)
"""
PER_MONTH = """
SELECT toYYYYMM(toDateTime(intDiv(timestamp_ms, 1000))) AS m, count() FROM events WHERE team_id = %(team)s GROUP BY m
"""


def month_start_ms(month: int) -> int:
    return int(datetime(month // 100, month % 100, 1, tzinfo=UTC).timestamp() * 1000)


def source_columns() -> list[list]:
    rows = []
    for month, count in MONTHS.items():
        start = month_start_ms(month) + 86_400_000  # a day in: the month whatever the server's time zone
        for i in range(count):
            person = PERSONS[i % len(PERSONS)]
            stamp = start + i * 60_000
            rows.append(
                (uuid.uuid4(), TEAM, "page", f"d-{person.hex[:8]}", f'{{"i":{i}}}', stamp, stamp + 7, person, "{}", "")
            )
    return [list(column) for column in zip(*rows, strict=True)]


@pytest.fixture(scope="module", autouse=True)
def copy_database():
    """CLICKHOUSE_DATABASE, for this module and the commands it starts: a database of the copy's
    own, migrated on the cluster here and dropped from every server after."""
    migrate(COPY_DATABASE, report=lambda _line: None)
    before = os.environ["CLICKHOUSE_DATABASE"]
    os.environ["CLICKHOUSE_DATABASE"] = COPY_DATABASE
    try:
        with override_settings(CLICKHOUSE_DATABASE=COPY_DATABASE):
            yield COPY_DATABASE
    finally:
        os.environ["CLICKHOUSE_DATABASE"] = before
        clickhouse.reset()
        query(
            SERVERS["cluster"].clickhouse[0].server.port,
            f"DROP DATABASE IF EXISTS {COPY_DATABASE} ON CLUSTER {settings.CLICKHOUSE_CLUSTER}",
        )


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A single ClickHouse 18.16 with bklog's one-server schema and the events, database `bklog`."""
    server = ClickHouseServer(tmp_path_factory.mktemp("source-clickhouse"))
    server.start()
    try:
        query(server.port, "CREATE DATABASE bklog")
        client = Client("127.0.0.1", port=server.port, database="bklog")
        for name in migration_names():
            for sql in operations(name, "bklog"):
                client.execute(sql)
        client.execute(INSERT_EVENTS, source_columns(), columnar=True)
        client.disconnect()
        yield server
    finally:
        server.stop()


def query(port: int, sql: str, params=None, **options):
    client = Client("127.0.0.1", port=port, **options)
    try:
        return client.execute(sql, params)
    finally:
        client.disconnect()


def on_source(server, sql: str, params=None):
    return query(server.port, sql, params, database="bklog")


def on_node(node, sql: str, params=None):
    return query(node.server.port, sql, params, database=settings.CLICKHOUSE_DATABASE)


def on_cluster(sql: str, params=None):
    """Through the first server, as the app reads: the first live replica of each shard."""
    return query(
        SERVERS["cluster"].clickhouse[0].server.port,
        sql,
        params,
        database=settings.CLICKHOUSE_DATABASE,
        settings={"load_balancing": "in_order", "prefer_localhost_replica": 0, "insert_distributed_sync": 1},
    )


def cluster_months() -> dict[int, int]:
    return dict(on_cluster(PER_MONTH, {"team": TEAM}))


def copy(*args: str) -> str:
    out = io.StringIO()
    call_command("copy_events_to_cluster", *args, stdout=out)
    return out.getvalue()


def test_dry_run_from_the_command_line_says_what_it_would_do_and_changes_nothing(source, test_database_url):
    result = subprocess.run(
        [sys.executable, "manage.py", "copy_events_to_cluster", "--source", f"127.0.0.1:{source.port}", "--dry-run"],
        cwd=ROOT,
        env=process_env(test_database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"4 month(s), 4,000 events on 127.0.0.1:{source.port} (database bklog); cluster bklog "
        "(dry run: nothing changes)."
    )
    assert lines[1:5] == [
        "201101: source 900, cluster 0: would copy.",
        "201102: source 1,100, cluster 0: would copy.",
        "201103: source 700, cluster 0: would copy.",
        "201104: source 1,300, cluster 0: would copy.",
    ]
    assert lines[5] == "Dry run over; 0 of 4 month(s) were already copied."
    assert cluster_months() == {}


def test_copy_keeps_every_event_as_it_was_sharded_by_person_then_a_second_run_skips(source):
    output = copy("--source", f"127.0.0.1:{source.port}")
    for month, count in MONTHS.items():
        assert f"{month}: source {count:,}, cluster 0: copying..." in output
        assert f"{month}: copied {count:,} events in " in output
    assert output.splitlines()[-1].startswith("Copied 4,000 events in ")
    assert cluster_months() == MONTHS

    assert on_cluster(ROWS, {"team": TEAM}) == on_source(source, ROWS, {"team": TEAM})  # uuid, timestamps, all

    persons_by_shard: dict[int, set[str]] = {}
    for node in SERVERS["cluster"].clickhouse:
        if node.replica == 1:  # the one the copy writes to (load_balancing in_order)
            held = on_node(
                node, "SELECT DISTINCT toString(person_id) FROM events_local WHERE team_id = %(t)s", {"t": TEAM}
            )
            persons_by_shard[node.shard] = {person for (person,) in held}
    assert all(persons_by_shard.values()), "both shards got some of the persons"
    assert set.intersection(*persons_by_shard.values()) == set()  # a person's events on one shard

    again = copy("--source", f"127.0.0.1:{source.port}")
    for month, count in MONTHS.items():
        assert f"{month}: source {count:,}, cluster {count:,}: already copied, skipped." in again
    assert again.splitlines()[-1] == "Copied 0 events in 0.0 s; 4 of 4 month(s) were already copied."
    assert cluster_months() == MONTHS


def test_an_interrupted_month_is_dropped_and_copied_again_once(source):
    """What a run stopped half-way through 201103 leaves: part of that month on the cluster. The
    month had been copied whole before (the previous test), so copying it again sends the same
    INSERT blocks: ClickHouse forgets a partition's blocks when it is dropped, and keeps them."""
    drop = DROP_CLUSTER_MONTH.format(database=settings.CLICKHOUSE_DATABASE, cluster=settings.CLICKHOUSE_CLUSTER)
    on_cluster(drop, {"month": 201103})
    source_params = {"source": f"127.0.0.1:{source.port}", "source_database": "bklog", "user": "default"}
    on_cluster(COPY_MONTH + "LIMIT 250", {**source_params, "password": "", "month": 201103})
    assert cluster_months()[201103] == 250

    output = copy("--source", f"127.0.0.1:{source.port}")
    assert "201103: source 700, cluster 250: partial, dropping the month on the cluster and copying it again..." in (
        output
    )
    assert "201103: copied 700 events in " in output
    for month in (201101, 201102, 201104):
        assert f"{month}: source {MONTHS[month]:,}, cluster {MONTHS[month]:,}: already copied, skipped." in output
    assert output.splitlines()[-1].startswith("Copied 700 events in ")
    assert output.splitlines()[-1].endswith("; 3 of 4 month(s) were already copied.")
    assert cluster_months() == MONTHS
    [(distinct,)] = on_cluster("SELECT uniqExact(uuid) FROM events WHERE team_id = %(t)s", {"t": TEAM})
    assert distinct == sum(MONTHS.values())


def test_a_month_with_more_events_on_the_cluster_is_left_alone_and_the_run_fails(source):
    on_cluster(
        INSERT_EVENTS,
        [(uuid.uuid4(), TEAM, "new", "d", "{}", month_start_ms(201102) + 86_400_000, 0, uuid.UUID(int=0), "{}", "")],
    )
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("copy_events_to_cluster", "--source", f"127.0.0.1:{source.port}", stdout=out)
    assert str(raised.value) == (
        f"the cluster holds more events than 127.0.0.1:{source.port} for month(s) 201102: it took new events for "
        "them already. Those months were left as they are; copy before pointing ingestion at the cluster, or "
        "compare the two by hand (docs/operations.md#growing-from-one-node-to-the-cluster)."
    )
    assert "201102: source 1,100, cluster 1,101: the cluster has more, left as it is." in out.getvalue()
    assert cluster_months()[201102] == 1_101


def test_refuses_when_the_source_does_not_answer():
    with pytest.raises(CommandError) as raised:
        copy("--source", "127.0.0.1:1")
    message = str(raised.value)
    assert message.startswith(
        "the cluster's ClickHouse could not read bklog.events at 127.0.0.1:1: check that every server of the "
        "cluster reaches that address (remote() runs there), that --source-database names the source's "
        "database, and that CLICKHOUSE_USER/CLICKHOUSE_PASSWORD are valid there too. ClickHouse said: "
    )
    assert "Connection refused (127.0.0.1:1)" in message
    assert cluster_months() == {**MONTHS, 201102: 1_101}


def test_refuses_when_the_source_has_no_such_database(source):
    with pytest.raises(CommandError) as raised:
        copy("--source", f"127.0.0.1:{source.port}", "--source-database", "bklog_nope")
    assert str(raised.value).startswith(
        f"the cluster's ClickHouse could not read bklog_nope.events at 127.0.0.1:{source.port}: check that"
    )
    assert str(raised.value).endswith(
        f"ClickHouse said: There is no table bklog_nope.events on server: 127.0.0.1:{source.port}"
    )


def test_refuses_without_a_cluster(settings):
    settings.CLICKHOUSE_CLUSTER = ""
    with pytest.raises(CommandError) as raised:
        copy("--source", "127.0.0.1:9000")
    assert str(raised.value) == (
        "CLICKHOUSE_CLUSTER is not set: this command copies a server's events into a cluster. Set "
        "CLICKHOUSE_CLUSTER (and CLICKHOUSE_HOST/CLICKHOUSE_ALT_HOSTS) to the cluster's, run "
        "`manage.py migrate_clickhouse`, then run it again."
    )


@pytest.mark.parametrize("bad", ["clickhouse-old", "clickhouse-old:", ":9000", "h:9000;DROP", ""])
def test_refuses_a_source_that_is_not_host_and_port(bad):
    with pytest.raises(CommandError) as raised:
        copy("--source", bad)
    assert str(raised.value) == (
        "--source must be HOST:PORT, the old server's native protocol address as the cluster's servers reach it "
        f"(e.g. clickhouse-old:9000), not {bad!r}."
    )


def test_stops_saying_to_run_again_when_a_shard_does_not_answer(source):
    """Both replicas of shard 2 down: the cluster cannot count a month, and the run stops, saying
    what to do, with nothing changed."""
    shard_2 = [node.server for node in SERVERS["cluster"].clickhouse if node.shard == 2]
    for server in shard_2:
        server.stop()
    try:
        with pytest.raises(CommandError) as raised:
            copy("--source", f"127.0.0.1:{source.port}")
    finally:
        for server in shard_2:
            server.start()
    assert str(raised.value).startswith(
        "a ClickHouse server did not answer (a shard of the cluster, or the source): run the command again once "
        "they all answer; months already copied are skipped and a month cut short is copied again. "
        "ClickHouse said: "
    )
    assert cluster_months() == {**MONTHS, 201102: 1_101}
