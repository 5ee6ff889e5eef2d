"""Issue 4's Must-show, end to end: capture API -> Redis -> real Celery worker -> ClickHouse,
read back through the events API (`person_id`, `person_properties` per event)."""

import pytest

from bklog_app.models import IngestionWarning
from bklog_app.persons.models import Person, PersonDistinctId
from tests.persons.helpers import api_events, at, captured, post_batch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NIL = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def send(client, project, api_client, celery_worker):
    """Send events as one capture request and wait until the worker has stored them."""
    sent = []

    def send_events(*events: dict) -> list[dict]:
        post_batch(client, project.api_token, list(events))
        sent.extend(events)
        return api_events(api_client, project.id, len(sent))

    return send_events


def test_anonymous_events_then_identify_share_one_person(send, project):
    send(
        captured("pageview", "anon-1", timestamp=at(1)),
        captured("pageview", "anon-1", timestamp=at(2)),
    )
    send(captured("$identify", "user-1", timestamp=at(3), properties={"$anon_distinct_id": "anon-1"}))
    events = send(captured("purchase", "user-1", timestamp=at(4)))
    assert [e["event"] for e in events] == ["pageview", "pageview", "$identify", "purchase"]
    person_ids = {e["person_id"] for e in events}
    assert len(person_ids) == 1 and None not in person_ids and NIL not in person_ids
    person = Person.objects.get(project=project)
    assert str(person.uuid) in person_ids and person.is_identified
    assert set(person.distinct_ids.values_list("distinct_id", flat=True)) == {"anon-1", "user-1"}


def test_set_on_identify_shows_in_later_snapshots_only(send):
    send(
        captured(
            "pageview",
            "anon",
            timestamp=at(1),
            properties={"$set": {"plan": "free"}, "$set_once": {"initial_referrer": "google"}},
        )
    )
    send(
        captured(
            "$identify",
            "user",
            timestamp=at(2),
            properties={"$anon_distinct_id": "anon", "$set": {"plan": "pro", "email": "u@example.com"}},
            **{"$set_once": {"initial_referrer": "bing", "first_seen_app": "web"}},
        )
    )
    events = send(
        captured("click", "user", timestamp=at(3), **{"$set": {"theme": "dark"}}),
        captured("click", "anon", timestamp=at(4), properties={"$set_once": {"plan": "ignored"}}),
    )
    snapshots = [e["person_properties"] for e in events]
    assert snapshots[0] == {"plan": "free", "initial_referrer": "google"}, "earlier events keep the old snapshot"
    identified = {"plan": "pro", "email": "u@example.com", "initial_referrer": "google", "first_seen_app": "web"}
    assert snapshots[1] == identified
    assert snapshots[2] == {**identified, "theme": "dark"}, "top-level $set"
    assert snapshots[3] == {**identified, "theme": "dark"}, "$set_once never overwrites"
    assert len({e["person_id"] for e in events}) == 1


def test_merge_with_illegal_id_zero_is_refused_but_set_applies(send, project):
    send(captured("pageview", "0", timestamp=at(1)))
    events = send(
        captured("$merge_dangerously", "real-user", timestamp=at(2), properties={"alias": "0", "$set": {"vip": True}})
    )
    merge = events[1]
    assert merge["person_properties"] == {"vip": True}
    assert merge["person_id"] != events[0]["person_id"]
    assert PersonDistinctId.objects.get(project=project, distinct_id="real-user").person.properties == {"vip": True}
    assert Person.objects.filter(project=project).count() == 2
    warning = IngestionWarning.objects.get(project=project)
    assert warning.type == "cannot_merge_with_illegal_distinct_id"
    assert warning.event_uuid == merge["uuid"]
    assert warning.details["illegal_distinct_id"] == "0"


def test_refused_merge_of_an_identified_person_warns_and_stores(send, project):
    send(
        captured("$identify", "user-a", timestamp=at(1), properties={"$anon_distinct_id": "anon-a"}),
        captured("pageview", "user-b", timestamp=at(2)),
    )
    events = send(
        captured("$identify", "user-b", timestamp=at(3), properties={"$anon_distinct_id": "user-a", "$set": {"b": 1}})
    )
    assert events[2]["person_properties"] == {"b": 1}
    assert events[0]["person_id"] != events[2]["person_id"] == events[1]["person_id"]
    assert IngestionWarning.objects.get(project=project).type == "cannot_merge_already_identified"


def test_chained_merges_end_with_one_person_on_every_event(send):
    send(captured("custom event", "first", timestamp=at(1)))
    send(captured("$identify", "second", timestamp=at(2), properties={"$anon_distinct_id": "first"}))
    events = send(captured("$identify", "third", timestamp=at(3), properties={"$anon_distinct_id": "first"}))
    person_ids = {e["person_id"] for e in events}
    assert len(person_ids) == 1 and NIL not in person_ids and None not in person_ids


def test_four_way_merge_ends_with_one_person_on_every_event(send, project):
    ids = ["one", "two", "three", "four"]
    events = send(*[captured("custom event", distinct_id, timestamp=at(n)) for n, distinct_id in enumerate(ids)])
    assert len({e["person_id"] for e in events}) == 4
    send(captured("$merge_dangerously", "one", timestamp=at(10), properties={"alias": "two"}))
    events = send(captured("$merge_dangerously", "four", timestamp=at(11), properties={"alias": "three"}))
    assert len({e["person_id"] for e in events}) == 2
    events = send(captured("$merge_dangerously", "three", timestamp=at(12), properties={"alias": "two"}))
    person_ids = {e["person_id"] for e in events}
    assert len(events) == 7
    assert len(person_ids) == 1 and NIL not in person_ids and None not in person_ids
    person = Person.objects.get(project=project)
    assert person_ids == {str(person.uuid)}
    assert set(person.distinct_ids.values_list("distinct_id", flat=True)) == set(ids)


def test_process_person_profile_false_stores_the_empty_person(send, project):
    events = send(
        captured(
            "pageview", "no-profile", timestamp=at(1), properties={"$process_person_profile": False, "$set": {"a": 1}}
        ),
        captured("pageview", "with-profile", timestamp=at(2), properties={"$set": {"a": 1}}),
    )
    assert events[0]["person_id"] is None and events[0]["person_properties"] == {}
    assert events[1]["person_id"] and events[1]["person_properties"] == {"a": 1}
    assert not PersonDistinctId.objects.filter(project=project, distinct_id="no-profile").exists()


def test_deleting_a_person_gives_the_next_event_a_new_one(send, project, api_client):
    """The worker's cache must notice a delete made by another process (this one, via the API)."""
    events = send(captured("pageview", "returning", timestamp=at(1), properties={"$set": {"old": True}}))
    first = events[0]["person_id"]
    assert api_client.delete(f"/api/projects/{project.id}/persons/{first}/").status_code == 204
    events = send(captured("pageview", "returning", timestamp=at(2)))
    assert events[1]["person_id"] not in (first, None, NIL)
    assert events[1]["person_properties"] == {}
