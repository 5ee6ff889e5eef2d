"""The waiting helpers of tests/factories.py fail when what they wait for does not happen."""

import pytest

from pipeline.ingestion.batch import ingest_messages
from tests.factories import assert_no_more_events, wait_for_events

pytestmark = pytest.mark.django_db


def store(project, n: int) -> None:
    events = [{"event": "counted", "distinct_id": f"d{i}"} for i in range(n)]
    message = {"id": "m", "token": project.api_token, "project_id": project.id, "events": events, "ip": None,
               "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None}  # fmt: skip
    assert ingest_messages([message]).stored == n


def test_wait_for_events_raises_saying_how_many_arrived(project):
    store(project, 2)
    assert len(wait_for_events(project.id, 2, timeout=5)) == 2
    with pytest.raises(AssertionError, match=rf"project {project.id}: 2 of 3 expected events stored after 0.3 s"):
        wait_for_events(project.id, 3, timeout=0.3)


def test_assert_no_more_events_fails_on_one_more(project):
    store(project, 2)
    assert len(assert_no_more_events(project.id, 2, settle_seconds=0)) == 2
    with pytest.raises(AssertionError, match="2 events stored, expected no more than 1"):
        assert_no_more_events(project.id, 1, settle_seconds=0)
