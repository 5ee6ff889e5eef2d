"""Issue 4 point 6: a batch of 1,000 events for 100 known distinct ids does not issue a query
per event. Counted with Django's CaptureQueriesContext, on the whole ingestion of the batch
(the code a worker runs) and on step 6 alone."""

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bklog_app.persons.models import Person
from pipeline.ingestion.batch import ingest_messages
from pipeline.persons.cache import get_cache
from pipeline.storage.events import list_events
from tests.persons.helpers import normalised, resolve

pytestmark = pytest.mark.django_db(transaction=True)

IDS = [f"known-{n}" for n in range(100)]


@pytest.fixture
def known_ids(project):
    resolve(project.id, [normalised("e", distinct_id, **{"$set": {"n": 0}}) for distinct_id in IDS])
    get_cache().clear()  # cold: nothing known to this process
    yield IDS
    get_cache().clear()


def person_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if "persons_" in q["sql"]]


def test_step_6_with_updates_on_every_event(project, known_ids):
    events = [normalised("e", IDS[n % 100], n, **{"$set": {"n": n}}) for n in range(1000)]
    with CaptureQueriesContext(connection) as queries:
        results, _ = resolve(project.id, events)
    # load, lock + version check, one bulk UPDATE (one per 900 rows); nothing per event.
    assert len(person_queries(queries)) <= 4, person_queries(queries)
    assert len(queries) <= 10, [q["sql"][:120] for q in queries]  # and the transaction, the batch's turn
    assert results[-1][1] == {"n": 999}
    assert Person.objects.get(distinct_ids__distinct_id="known-5").properties == {"n": 905}


def test_whole_batch_through_ingestion(project, known_ids):
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    messages = [
        {
            "id": str(uuid.uuid4()),
            "token": project.api_token,
            "project_id": project.id,
            "events": [
                {
                    "event": "pageview",
                    "distinct_id": IDS[(m * 100 + n) % 100],
                    "uuid": str(uuid.uuid4()),
                    "properties": {"$set": {"last": m * 100 + n}} if n % 2 else {},
                }
                for n in range(100)
            ],
            "ip": "127.0.0.1",
            "now": now,
            "sent_at": None,
        }
        for m in range(10)
    ]
    with CaptureQueriesContext(connection) as queries:
        report = ingest_messages(messages)
    assert report.stored == 1000
    assert len(person_queries(queries)) <= 6, person_queries(queries)
    assert len(queries) < 50, "a constant number of queries per batch, not one per event"
    stored = list_events(project.id, limit=2000)
    assert len(stored) == 1000 and all(event["person_id"] for event in stored)


def test_warm_cache_read_only_batch_is_one_query(project, known_ids):
    resolve(project.id, [normalised("e", distinct_id) for distinct_id in IDS])  # warms the cache
    with CaptureQueriesContext(connection) as queries:
        resolve(project.id, [normalised("e", IDS[n % 100], n) for n in range(1000)])
    assert len(person_queries(queries)) == 1, [q["sql"][:120] for q in queries]
