"""The deletion mutations complete, and delete only what they match, on ClickHouse 18.16 (the
session's server, through pipeline/storage/privacy.py) and on a current ClickHouse (chdb)."""

import time
import uuid

import pytest
from chdb.session import Session

from bklog_app.privacy.models import DeletionRequest
from pipeline.privacy import deletion
from pipeline.storage import privacy as store
from pipeline.storage.events import INSERT_EVENTS, EventRow, count_events, insert_events
from pipeline.storage.migrate import MIGRATIONS_TABLE, migration_names, operations
from tests.pipeline.test_clickhouse_sql import render

PERSON = uuid.UUID(int=7)
MERGED_AWAY = uuid.UUID(int=8)


def row(team_id: int, distinct_id: str, person_id: uuid.UUID, event: str = "e", ms: int = 1_714_539_480_000):
    return EventRow(
        uuid=uuid.uuid4(), team_id=team_id, event=event, distinct_id=distinct_id, properties={}, timestamp_ms=ms,
        created_at_ms=ms, person_id=person_id, person_properties={}, elements_chain="",
    )  # fmt: skip


ROWS = [
    ("alice", PERSON),
    ("alice-anon", MERGED_AWAY),  # merged into alice's person: its events keep the old person_id
    ("old-device", MERGED_AWAY),  # a distinct id no longer known, only its person_id ties it
    ("bob", uuid.UUID(int=9)),
]
PERSON_PARAMS = {"distinct_ids": ("alice", "alice-anon"), "person_ids": (str(PERSON), str(MERGED_AWAY))}


def wait_done(state) -> None:
    deadline = time.monotonic() + 60
    while not state():
        assert time.monotonic() < deadline, "the mutation did not finish within 60 s"
        time.sleep(0.2)


def test_person_and_filter_mutations_on_clickhouse_18():
    team_id = 40_000 + uuid.uuid4().int % 10_000
    insert_events([row(team_id, d, p) for d, p in ROWS] + [row(team_id + 1, "alice", PERSON)])
    insert_events([row(team_id, "bob", uuid.UUID(int=9), event="late", ms=1_714_539_490_000)])
    params = store.person_params(team_id, list(PERSON_PARAMS["distinct_ids"]), list(PERSON_PARAMS["person_ids"]))
    assert store.count_person_events(params) == 3
    store.delete_person_events(params, "bklog-deletion:test-18:")
    wait_done(lambda: store.mutation_state("bklog-deletion:test-18:").is_done)
    assert store.count_person_events(params) == 0
    assert count_events(team_id) == 2 and count_events(team_id + 1) == 1

    late = store.filter_params(team_id, "late", "", 1_714_539_485_000, None)
    assert store.count_filter_events(late) == 1
    store.delete_filter_events(late, "bklog-deletion:test-18-filter:")
    wait_done(lambda: store.mutation_state("bklog-deletion:test-18-filter:").is_done)
    assert count_events(team_id) == 1
    assert store.mutation_state("bklog-deletion:no-such-mutation:").found is False


@pytest.fixture
def chdb_events(tmp_path):
    session = Session(str(tmp_path / "chdb"))
    session.query("CREATE DATABASE IF NOT EXISTS bklog")
    session.query("USE bklog")
    session.query(MIGRATIONS_TABLE.format(database="bklog"))
    for name in migration_names():
        for sql in operations(name, "bklog"):
            session.query(sql)
    values = ", ".join(
        f"('{uuid.uuid4()}', 5, 'e', '{d}', '{{}}', 1714539480000, 1714539480000, '{p}', '{{}}', '')" for d, p in ROWS
    )
    session.query(f"{INSERT_EVENTS.replace('INTO events', 'INTO bklog.events')} {values}")
    yield session
    session.cleanup()


def test_the_person_mutation_completes_on_current_clickhouse(chdb_events):
    def query(sql: str, params: dict) -> str:
        rendered = render(sql, params).replace("FROM events", "FROM bklog.events")
        return str(chdb_events.query(rendered.replace("TABLE events", "TABLE bklog.events"), "CSV")).strip()

    params = {"team_id": 5, **PERSON_PARAMS}
    assert query(store.COUNT_PERSON_EVENTS, params) == "3"
    query(store.DELETE_PERSON_EVENTS.format(target="events"), {**params, "marker": "bklog-deletion:chdb:"})

    def done() -> bool:
        status = query(store.MUTATION_STATUS, {"table": "events", "marker": "bklog-deletion:chdb:"})
        return status.split(",")[1] == "1"

    wait_done(done)
    assert query(store.COUNT_PERSON_EVENTS, params) == "0"
    assert query("SELECT distinct_id FROM events WHERE team_id = %(team_id)s", {"team_id": 5}) == '"bob"'


@pytest.mark.django_db
def test_a_failing_request_fails_with_its_reason_and_the_others_go_on(project):
    broken = DeletionRequest.objects.create(project=project, kind="filter", filter={"event": 5})  # not a name
    gone = DeletionRequest.objects.create(
        project=project, kind="filter", filter={"event": "e"}, status="running", mutation_marker="bklog-deletion:x:"
    )
    fine = DeletionRequest.objects.create(project=project, kind="filter", filter={"event": "e"}, dry_run=True)
    assert deletion.run_deletions(project.id) is None
    for item in (broken, gone, fine):
        item.refresh_from_db()
    assert broken.status == "failed" and broken.error.startswith("ServerException: ")
    assert broken.error.endswith("; make a new request once the cause is fixed.")
    assert gone.status == "failed" and "no longer in system.mutations" in gone.error
    assert (fine.status, fine.dry_run_count) == ("counted", 0)
