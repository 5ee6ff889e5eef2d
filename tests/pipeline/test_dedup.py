"""The dedup claims of pipeline/ingestion/dedup.py against real Redis (and ClickHouse for a
crashed attempt's own claims)."""

import uuid

import pytest

from pipeline.ingestion import dedup
from pipeline.ingestion.dedup import Claim
from pipeline.redis import get_redis


def confirm(items: list[Claim]) -> None:
    """dedup.confirm as a batch runs it: in a pipeline executed after the INSERT."""
    writes = get_redis().pipeline(transaction=False)
    dedup.confirm(items, writes)
    writes.execute()


@pytest.fixture
def team() -> int:
    return 900_000 + uuid.uuid4().int % 100_000  # no other test's keys


def claims(team: int, uuids: list[str], message_id: str) -> list[Claim]:
    """Message ids are global (a message's done mark): each test's are its own."""
    return [Claim(team, u, f"{team}-{message_id}") for u in uuids]


def test_fresh_uuids_are_claimed_once_and_repeats_in_a_batch_skipped(team):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert dedup.claim(claims(team, [a, b, a], "m1")) == [True, True, False]
    # Another message now finds them pending (by m1): skipped, m1 stores them.
    assert dedup.claim(claims(team, [a, b], "m2")) == [False, False]


def test_confirmed_uuids_are_duplicates_for_everyone(team):
    a = str(uuid.uuid4())
    assert dedup.claim(claims(team, [a], "m1")) == [True]
    confirm(claims(team, [a], "m1"))
    assert dedup.claim(claims(team, [a], "m1")) == [False]
    assert dedup.claim(claims(team, [a], "m2")) == [False]


def test_a_message_confirmed_but_not_acknowledged_finds_its_events_stored(team):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert dedup.claim(claims(team, [a, b], "m1")) == [True, True]
    confirm(claims(team, [a, b], "m1"))
    # m1 died before its acknowledgement; redelivered, it finds its own claims on a done message.
    assert dedup.claim(claims(team, [a, b], "m1")) == [False, False]


def test_a_confirmation_covers_only_its_own_messages_claims(team):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert dedup.claim(claims(team, [a], "m1")) == [True]
    assert dedup.claim(claims(team, [b], "m2")) == [True]
    confirm(claims(team, [a], "m1"))
    # m2 is not done and ClickHouse has no row for b: m2's retry still inserts it.
    assert dedup.claim(claims(team, [a, b], "m2")) == [False, True]


def test_a_retry_of_the_same_message_inserts_what_did_not_land(team):
    a = str(uuid.uuid4())
    assert dedup.claim(claims(team, [a], "m1")) == [True]
    # m1 died between claim and confirm; ClickHouse has no row for it: m1's retry inserts it.
    assert dedup.claim(claims(team, [a], "m1")) == [True]


def test_released_claims_can_be_taken_by_a_replay(team):
    a = str(uuid.uuid4())
    assert dedup.claim(claims(team, [a], "m1")) == [True]
    dedup.release(claims(team, [a], "m1"))
    assert dedup.claim(claims(team, [a], "replay")) == [True]


def test_more_uuids_than_one_script_call_takes(team, monkeypatch):
    monkeypatch.setattr(dedup, "SCRIPT_KEYS", 7)
    uuids = [str(uuid.uuid4()) for _ in range(20)]
    assert dedup.claim(claims(team, uuids[:10], "m1")) == [True] * 10
    assert dedup.claim(claims(team, uuids, "m2")) == [False] * 10 + [True] * 10
    confirm(claims(team, uuids, "m2"))
    assert dedup.claim(claims(team, uuids, "m3")) == [False] * 20


def test_a_uuid_marked_stored_on_its_own_is_a_duplicate_for_everyone(team):
    """The per-uuid STORED form, written when ClickHouse showed an earlier attempt's INSERT landed."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert dedup.claim(claims(team, [a, b], "m1")) == [True, True]
    dedup._mark_stored(claims(team, [a], "m1"))
    assert dedup.claim(claims(team, [a, b], "m1")) == [False, True]  # b: m1 not done, not in ClickHouse
    assert dedup.claim(claims(team, [b, a, b], "m2")) == [False, False, False]
