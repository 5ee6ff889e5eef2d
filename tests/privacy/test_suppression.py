"""Suppression at ingestion: a suppressed id's events never reach the plugin chain or the table,
are counted, and the change applies from the next batch on; a replayed dead letter of a
suppressed id is dropped the same way."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bklog_app.models import DeadLetter
from bklog_app.plugins.models import PluginConfig
from bklog_app.privacy import service
from bklog_app.privacy.models import Suppression
from pipeline.ingestion.batch import ingest_messages
from pipeline.metrics import EVENTS_SUPPRESSED
from pipeline.storage.events import list_events
from tests.factories import assert_no_more_events, make_project
from tests.plugins.conftest import cache_values, local_plugin, local_plugin_config, wait_until  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

RECORDING_PLUGIN = """
def process_event(event, meta):
    meta.cache.lpush("seen", [event["distinct_id"]])
    return event
"""


def message(project, *distinct_ids: str) -> dict:
    return {
        "id": str(uuid.uuid4()), "token": project.api_token, "project_id": project.id, "ip": None,
        "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None,
        "events": [{"event": "e", "distinct_id": d, "uuid": str(uuid.uuid4())} for d in distinct_ids],
    }  # fmt: skip


def stored_ids(project) -> list[str]:
    return sorted(row["distinct_id"] for row in list_events(project.id))


def test_suppressed_events_never_reach_plugins_or_storage_and_are_counted(project, local_plugin_config):  # noqa: F811
    config = local_plugin_config(RECORDING_PLUGIN)
    PluginConfig.objects.filter(pk=config.pk).update(enabled=True)
    other_project = make_project(project.organization)
    service.add_suppression(project, "gone", reason="test")
    counted_before = EVENTS_SUPPRESSED._value.get()

    report = ingest_messages([message(project, "gone", "kept", "gone"), message(other_project, "gone")])
    assert report.stored == 2 and report.dropped == 2
    assert stored_ids(project) == ["kept"]
    assert [row["distinct_id"] for row in list_events(other_project.id)] == ["gone"]  # per project
    assert cache_values(config.plugin_id, project.id, "seen") == ["kept"]
    suppression = Suppression.objects.get(project=project)
    assert suppression.events_dropped == 2 and suppression.last_dropped_at is not None
    assert EVENTS_SUPPRESSED._value.get() - counted_before == 2


def test_a_suppression_applies_from_the_next_batch_and_lifting_it_lets_events_in(project):
    ingest_messages([message(project, "u1")])
    item = service.add_suppression(project, "u1")
    ingest_messages([message(project, "u1")])
    assert stored_ids(project) == ["u1"]
    service.lift_suppression(item)
    ingest_messages([message(project, "u1")])
    assert stored_ids(project) == ["u1", "u1"]
    assert Suppression.objects.get().events_dropped == 1


def test_a_replayed_dead_letter_of_a_suppressed_id_is_dropped(api_client, project, celery_worker):
    ingest_messages([{**message(project), "events": [{"event": "broken", "properties": {}}]}])  # no distinct_id
    letter = DeadLetter.objects.get(project=project)
    letter.payload = {**letter.payload, "distinct_id": "gone"}  # the cause fixed...
    letter.save()
    api_client.post(f"/api/projects/{project.id}/suppressions/", {"distinct_id": "gone"}, format="json")
    response = api_client.post(f"/api/projects/{project.id}/dead_letters/{letter.id}/replay/")
    assert response.json() == {"replayed": 1}
    wait_until(lambda: Suppression.objects.get().events_dropped == 1, message="the replayed event to be dropped")
    assert_no_more_events(project.id, 0)
    assert DeadLetter.objects.filter(project=project).count() == 1  # dropped, not dead-lettered again


def test_a_batch_of_many_projects_reads_their_suppressions_at_once():
    """One query for the suppressions of every project of a batch whose set changed (the first
    batch: all of them), none when none changed; each project's own ids are dropped."""
    made = [make_project() for _ in range(4)]
    service.add_suppression(made[1], "u1")
    service.add_suppression(made[2], "u2")
    batch = [message(project, "u1", "u2", "u3") for project in made]
    with CaptureQueriesContext(connection) as queries:
        ingest_messages(batch)
    assert len(suppression_reads(queries)) == 1, suppression_reads(queries)
    assert [stored_ids(project) for project in made] == [
        ["u1", "u2", "u3"],
        ["u2", "u3"],
        ["u1", "u3"],
        ["u1", "u2", "u3"],
    ]
    with CaptureQueriesContext(connection) as queries:
        ingest_messages([message(project, "u1") for project in made])
    assert suppression_reads(queries) == [], "no set changed: none read again"
    service.add_suppression(made[3], "u3")
    ingest_messages([message(project, "u3") for project in made])
    assert stored_ids(made[3]) == ["u1", "u1", "u2", "u3"], "the new suppression applies from the next batch"


def suppression_reads(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith("SELECT") and 'FROM "privacy_suppression"' in q["sql"]]
