"""A batch runs with the cyclic garbage collector paused (pipeline/ingestion/tasks.py `gc_paused`),
and the collector is on again after it, whether the batch stored its events or failed."""

import gc

import pytest

from pipeline.ingestion import tasks
from tests.pipeline.test_batch_round_trips import single_event_messages

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_runs_with_the_collector_paused_and_turns_it_back_on(project, monkeypatch):
    seen = []

    def recording(name, real):
        def wrapper(*args):
            seen.append((name, gc.isenabled()))
            return real(*args)

        return wrapper

    monkeypatch.setattr(tasks, "_decoded", recording("decode", tasks._decoded))
    monkeypatch.setattr(tasks, "ingest_messages", recording("ingest", tasks.ingest_messages))

    assert tasks.ingest_batch.run(single_event_messages(project, 3))

    assert seen == [("decode", False), ("ingest", False)]
    assert gc.isenabled()


def test_a_failed_batch_turns_the_collector_back_on(project, monkeypatch):
    def broken(_messages):
        raise ValueError("a bug, not an outage")

    monkeypatch.setattr(tasks, "ingest_messages", broken)

    assert tasks.ingest_batch.run(single_event_messages(project, 2))  # dead-lettered, so settled

    assert gc.isenabled()


def test_a_collector_turned_off_by_someone_else_stays_off():
    gc.disable()
    try:
        with tasks.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
