"""What only the cluster topology has (docs/operations.md#cluster-mode): replicated and sharded
events, a replica that drops a retried INSERT, capture waiting for a Redis replica, and a
Sentinel failover followed without a restart. Run in the cluster pass of `make test`
(BKLOG_TEST_TOPOLOGY=cluster); the rest of that pass is the ingestion, events API and export
tests, unchanged."""

import contextlib
import time
import uuid

import orjson
import pytest
import redis
from clickhouse_driver import Client
from django.conf import settings

from pipeline.ingestion import journal
from pipeline.ingestion.enqueue import republish
from pipeline.ingestion.message import INGEST_QUEUES
from pipeline.storage.events import EventRow, count_events, insert_events
from pipeline.storage.migrate import migrate
from tests.conftest import SERVERS
from tests.factories import wait_for_events

pytestmark = [
    pytest.mark.skipif("cluster" not in SERVERS, reason="cluster topology only (BKLOG_TEST_TOPOLOGY=cluster)"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
]

NIL = uuid.UUID(int=0)


@pytest.fixture
def cluster():
    return SERVERS["cluster"]


def on_node(node, sql: str, params=None):
    client = Client(host="127.0.0.1", port=node.server.port, database=settings.CLICKHOUSE_DATABASE)
    try:
        return client.execute(sql, params)
    finally:
        client.disconnect()


def rows_for(team_id: int, person_ids: list[uuid.UUID], per_person: int) -> list[EventRow]:
    now = int(time.time() * 1000)
    return [
        EventRow(uuid.uuid4(), team_id, "page", f"device-{p.hex[:6]}-{i % 2}", {"i": i}, now, now, p, {}, "")
        for p in person_ids
        for i in range(per_person)
    ]


def post_batch(client, token: str, events: list[dict]):
    body = {"api_key": token, "batch": events}
    return client.post("/batch/", data=orjson.dumps(body), content_type="application/json")


def test_every_server_holds_a_replicated_local_table_behind_the_distributed_one(cluster):
    for node in cluster.clickhouse:
        engines = dict(
            on_node(
                node,
                "SELECT name, engine FROM system.tables WHERE database = %(db)s",
                {"db": settings.CLICKHOUSE_DATABASE},
            )
        )
        assert engines["events_local"] == "ReplicatedReplacingMergeTree"
        assert engines["events"] == "Distributed"
    assert migrate(settings.CLICKHOUSE_DATABASE, report=lambda _line: None) == []  # recorded on every server


def test_a_persons_events_sit_on_one_shard_and_on_both_its_replicas(cluster, project):
    persons = [uuid.uuid4() for _ in range(12)]
    insert_events(rows_for(project.id, persons, per_person=5))
    assert count_events(project.id) == 60
    time.sleep(1)  # replication to the second replica of each shard is asynchronous
    shards: dict[int, dict[str, int]] = {}
    for node in cluster.clickhouse:
        counted = on_node(
            node,
            "SELECT toString(person_id), count() FROM events_local WHERE team_id = %(t)s GROUP BY person_id",
            {"t": project.id},
        )
        per_person = dict(counted)
        assert all(n == 5 for n in per_person.values())  # all five of a person's events, or none
        if node.shard in shards:
            assert per_person == shards[node.shard]  # the replica holds what its shard holds
        shards[node.shard] = per_person
    assert sorted(p for held in shards.values() for p in held) == sorted(str(p) for p in persons)
    assert all(shards.values()), "every shard got some of the twelve persons"


def test_a_retried_insert_is_dropped_by_the_replica(project):
    rows = rows_for(project.id, [uuid.uuid4(), uuid.uuid4(), NIL], per_person=4)
    insert_events(rows)
    insert_events(rows)  # the same batch again: a retry after a lost answer
    assert count_events(project.id) == 12


def test_ingestion_through_the_cluster_stores_each_event_once(client, project, celery_worker):
    events = [
        {"event": "page", "distinct_id": f"u-{i % 7}", "uuid": str(uuid.uuid4()), "properties": {"i": i}}
        for i in range(40)
    ]
    assert post_batch(client, project.api_token, events).status_code == 200
    assert post_batch(client, project.api_token, events[:10]).status_code == 200  # an SDK's retry
    stored = wait_for_events(project.id, 40)
    assert sorted(row["uuid"] for row in stored) == sorted(e["uuid"] for e in events)


def test_capture_answers_503_while_no_replica_confirms_and_200_again_after(cluster, client, project):
    cluster.redis_replica.stop()
    try:
        response = post_batch(client, project.api_token, [{"event": "e", "distinct_id": "d"}])
        assert response.status_code == 503
        assert response.json()["type"] == "server_error"
        assert "did not confirm the events" in response.json()["detail"]
    finally:
        cluster.redis_replica.start()
    statuses = []
    deadline = time.monotonic() + 30
    while statuses[-1:] != [200] and time.monotonic() < deadline:  # 503 while the replica resyncs
        statuses.append(post_batch(client, project.api_token, [{"event": "e", "distinct_id": "d"}]).status_code)
        time.sleep(0.2)
    assert statuses[-1] == 200, statuses


def test_a_replication_wait_longer_than_the_socket_timeout_still_answers_503(cluster, client, project, settings):
    """REDIS_WAIT_TIMEOUT_MS past the Redis client's usual 5 s socket timeout: the clients wait
    longer than the WAIT (pipeline/redis.py `socket_timeout`), so capture answers the 503 that
    names replication, not a socket timeout."""
    from pipeline.redis import _client_for

    usual = settings.REDIS_WAIT_TIMEOUT_MS
    settings.REDIS_WAIT_TIMEOUT_MS = 5_500
    _client_for.cache_clear()  # clients made with the 5 s timeout are forgotten
    cluster.redis_replica.stop()
    try:
        response = post_batch(client, project.api_token, [{"event": "e", "distinct_id": "d"}])
        assert response.status_code == 503
        assert "did not confirm the events" in response.json()["detail"]
    finally:
        cluster.redis_replica.start()
        _client_for.cache_clear()
    cluster.wait_until_writes_replicate(within_ms=usual)  # for the tests that follow


def test_a_master_failover_is_followed_without_a_restart(cluster, client, project, celery_worker):
    """Kill the Redis master: Sentinel promotes the replica, capture and the session's worker find
    it on their own, and nothing accepted before or after is lost. The old master comes back as a
    replica, and a second failover puts it back in charge for the tests that follow (even when
    this one fails: they reach that server directly).

    The master can die between the worker's BRPOP of the "before" message and kombu's record of
    it among the unacknowledged (seen in CI): the message is then in neither place, and only the
    capture journal has it (pipeline/ingestion/journal.py). Beat sweeps the journal every 30 s
    with a 60 s grace in production; this test has no beat, so it sweeps as beat would, with a
    grace of a few seconds."""
    old_master, old_replica = cluster.redis_master, cluster.redis_replica
    sentinel = redis.Redis(host="127.0.0.1", port=cluster.sentinels[0].port)
    try:
        before = [{"event": "page", "distinct_id": "a", "uuid": str(uuid.uuid4())} for _ in range(5)]
        assert post_batch(client, project.api_token, before).status_code == 200
        old_master.kill()
        after = [{"event": "page", "distinct_id": "b", "uuid": str(uuid.uuid4())} for _ in range(5)]
        accepted_at = None
        deadline = time.monotonic() + 60
        while accepted_at is None and time.monotonic() < deadline:
            if post_batch(client, project.api_token, after).status_code == 200:
                accepted_at = time.monotonic()
            else:
                time.sleep(0.5)  # 503 until Sentinel has promoted the replica and it has a replica again
                if not old_master.is_running() and _master_port(sentinel) == old_replica.port:
                    old_master.start()  # back as a replica of the new master (Sentinel reconfigures it)
        assert accepted_at is not None, "capture never recovered after the failover"
        assert _master_port(sentinel) == old_replica.port
        stored = _wait_sweeping_the_journal(project.id, 10, timeout=120)
        assert sorted(row["uuid"] for row in stored) == sorted(e["uuid"] for e in before + after)
    finally:
        if not old_master.is_running():
            old_master.start()
        _fail_back(sentinel, old_master.port)


def _wait_sweeping_the_journal(project_id: int, count: int, timeout: float) -> list[dict]:
    """wait_for_events, with the journal swept every 2 s (grace 5 s) as beat sweeps it."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError):  # the new master's replica still resyncing
            journal.sweep(INGEST_QUEUES, republish, grace_seconds=5)
        try:
            return wait_for_events(project_id, count, timeout=min(2.0, max(deadline - time.monotonic(), 0.1)))
        except AssertionError:
            if time.monotonic() >= deadline:
                raise


def _master_port(sentinel: redis.Redis) -> int:
    return int(sentinel.execute_command("SENTINEL", "get-master-addr-by-name", "bklog")[1])


def _fail_back(sentinel: redis.Redis, port: int) -> None:
    deadline = time.monotonic() + 60
    while _master_port(sentinel) != port and time.monotonic() < deadline:
        # INPROG, or no good replica yet (still syncing): asked again in a moment.
        with contextlib.suppress(redis.ResponseError):
            sentinel.execute_command("SENTINEL", "FAILOVER", "bklog")
        time.sleep(2)
    assert _master_port(sentinel) == port
    master = redis.Redis(host="127.0.0.1", port=port)
    while time.monotonic() < deadline:  # its replica has resynced: capture's WAIT is answered
        master.set("bklog:test:failback", "1")
        if master.execute_command("WAIT", 1, 1000) >= 1:
            return
    raise AssertionError("the replica did not resync after the fail-back")
