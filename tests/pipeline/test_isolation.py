"""Isolation between projects (pipeline/ingestion/isolation.py), on the real stack: a project whose
plugin sleeps moves to the `ingestion_overflow` queue and its events are still stored once, the
others' keep going to `ingestion`, the state comes back to healthy, and it shows in the API, the
admin and the metrics."""

import uuid

import orjson
import pytest

from bklog_app.models import Membership
from pipeline.ingestion import isolation, journal, projects
from pipeline.ingestion.enqueue import enqueue, publish_journaled, republish
from pipeline.ingestion.isolation import ChainCost
from pipeline.ingestion.message import INGEST_QUEUE, INGEST_QUEUES, OVERFLOW_QUEUE, CapturedRequest, parts_of
from pipeline.ingestion.publish import message_body
from pipeline.metrics import render
from pipeline.queues import ROLE_QUEUES, Queue
from pipeline.redis import get_redis
from tests.factories import api_client_for, make_project
from tests.pipeline.test_ingestion_e2e import assert_stored_exactly_once, make_events, post_batch
from tests.pipeline.test_journal import broker, capture_kwargs  # noqa: F401 - a broker database of its own
from tests.plugins.conftest import install, local_plugin, wait_until  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db(transaction=True)]

SLOW_PLUGIN = """
import time

def process_event(event, meta):
    time.sleep(0.1)
    return event
"""


def move_to_overflow(project_id: int) -> list[isolation.Move]:
    """What a batch records when a project's chain took 100 ms per event, 40 times."""
    return isolation.record({project_id: ChainCost(events=40, seconds=4.0)}, projects.EPOCH_KEY)


def journaled_queue(event_uuid: str) -> str:
    """The queue capture pushed the message with this event to, from the capture journal (which
    keeps it until its batch is done: with a plugin that sleeps, long after capture answered)."""
    for raw in get_redis().hvals(journal.MESSAGES_KEY):
        _args, kwargs, _embed = message_body(raw)
        if any(event.get("uuid") == event_uuid for part in parts_of(kwargs) for event in part["events"]):
            return orjson.loads(raw)["properties"]["delivery_info"]["routing_key"]
    raise AssertionError(f"no journaled message has the event {event_uuid}")


def test_the_overflow_queue_is_declared_and_consumed_by_its_own_role_and_all():
    assert Queue.INGESTION_OVERFLOW.value == "ingestion_overflow"
    assert ROLE_QUEUES["ingestion_overflow"] == (Queue.INGESTION_OVERFLOW,)
    assert Queue.INGESTION_OVERFLOW in ROLE_QUEUES["all"]
    assert Queue.INGESTION_OVERFLOW not in ROLE_QUEUES["ingestion"]  # a slow project cannot take its slots


def test_a_slow_chain_moves_the_project_and_a_fast_one_brings_it_back(settings):
    project = make_project()
    assert isolation.state_of(project.id) == {"state": "healthy", "since": None, "why": None}
    epoch = get_redis().get(projects.EPOCH_KEY)

    [move] = move_to_overflow(project.id)
    assert (move.project_id, move.state) == (project.id, "overflow")
    assert move.why == "plugin chain 100.0 ms per event (limit 50 ms)"
    state = isolation.state_of(project.id)
    assert state["state"] == "overflow" and state["since"] and state["why"] == move.why
    assert get_redis().get(projects.EPOCH_KEY) != epoch  # every process's cached project drops
    assert projects.project_for_token(project.api_token).ingestion_overflow

    # Under the overflow threshold but over the recovery one: stays (hysteresis).
    assert isolation.record({project.id: ChainCost(events=400, seconds=10.0)}, projects.EPOCH_KEY) == []
    # Fast, but not yet INGESTION_ISOLATION_MIN_OVERFLOW_SECONDS in overflow: stays.
    assert isolation.record({project.id: ChainCost(events=4000, seconds=0.0)}, projects.EPOCH_KEY) == []
    settings.INGESTION_ISOLATION_MIN_OVERFLOW_SECONDS = 0
    [move] = isolation.record({project.id: ChainCost(events=4000, seconds=0.0)}, projects.EPOCH_KEY)
    assert move.state == "healthy" and move.why.startswith("plugin chain back to ")
    assert isolation.state_of(project.id)["state"] == "healthy"
    assert not projects.project_for_token(project.api_token).ingestion_overflow


def test_failing_plugins_move_the_project_and_few_events_move_nothing():
    failing, quiet = make_project(), make_project()
    [move] = isolation.record({failing.id: ChainCost(events=30, seconds=0.03, errors=20)}, projects.EPOCH_KEY)
    assert (move.state, move.why) == ("overflow", "plugin errors on 67% of events (limit 50%)")
    assert isolation.record({quiet.id: ChainCost(events=5, seconds=5.0)}, projects.EPOCH_KEY) == []
    assert isolation.state_of(quiet.id)["state"] == "healthy"


def test_switched_off_nothing_moves(settings):
    settings.INGESTION_ISOLATION_ENABLED = False
    project = make_project()
    assert move_to_overflow(project.id) == []
    assert not projects.project_for_token(project.api_token).ingestion_overflow


def test_capture_puts_a_project_in_overflow_on_the_overflow_queue(client, project, broker):  # noqa: F811
    _, redis = broker  # no worker consumes it: what capture pushed stays there
    healthy = make_project()
    move_to_overflow(project.id)
    assert post_batch(client, project.api_token, make_events(2)).status_code == 200
    assert (redis.llen(OVERFLOW_QUEUE), redis.llen(INGEST_QUEUE)) == (1, 0)
    assert post_batch(client, healthy.api_token, make_events(2)).status_code == 200
    assert (redis.llen(OVERFLOW_QUEUE), redis.llen(INGEST_QUEUE)) == (1, 1)


def test_the_journal_sweep_finds_overflow_messages_and_republishes_there(project, broker):  # noqa: F811
    _, redis = broker
    publish_journaled(capture_kwargs(project, 2, "kept"), queue=OVERFLOW_QUEUE)
    lost = publish_journaled(capture_kwargs(project, 2, "lost"), queue=OVERFLOW_QUEUE)
    assert redis.lrem(OVERFLOW_QUEUE, 1, redis.hget(journal.MESSAGES_KEY, lost)) == 1
    counts = journal.sweep(INGEST_QUEUES, republish, grace_seconds=0)
    assert counts == {"old": 2, "pending": 1, "republished": 1, "gone": 0}
    assert (redis.llen(OVERFLOW_QUEUE), redis.llen(INGEST_QUEUE)) == (2, 0)


def test_capture_routes_by_the_state_and_both_projects_are_stored_once(
    client,
    celery_worker,
    local_plugin,  # noqa: F811 - the plugin tests' fixtures, imported
    install,  # noqa: F811
    project,
):
    """The slow project is moved by the batches that run its plugin; after that capture puts
    its requests on `ingestion_overflow` while the other project's stay on `ingestion`."""
    _plugin, _config = install({"source_type": "local", "path": local_plugin(SLOW_PLUGIN)})
    healthy = make_project()
    slow_events = []
    for i in range(4):
        slow_events += (batch := make_events(10, prefix=f"slow-{i}"))
        assert post_batch(client, project.api_token, batch).status_code == 200
    wait_until(lambda: isolation.state_of(project.id)["state"] == "overflow", timeout=60, message="overflow")

    aside = make_events(5, prefix="aside")
    assert post_batch(client, project.api_token, aside).status_code == 200
    assert journaled_queue(aside[0]["uuid"]) == OVERFLOW_QUEUE
    fast = make_events(5, prefix="fast")
    assert post_batch(client, healthy.api_token, fast).status_code == 200
    assert_stored_exactly_once(healthy.id, fast)
    assert_stored_exactly_once(project.id, slow_events + aside, timeout=90)


def test_messages_already_on_the_ingestion_queue_are_moved_and_stored_once(celery_worker, project):
    move_to_overflow(project.id)
    events = make_events(3, prefix="queued")
    request = CapturedRequest(
        token=project.api_token, project_id=project.id, events=events, ip=None, now="2026-01-01T00:00:00.000+00:00",
        sent_at=None,
    )  # fmt: skip
    enqueue(request, coalesce=False, queue=INGEST_QUEUE)  # as capture did before the move
    assert_stored_exactly_once(project.id, events)


def test_the_state_is_in_the_api_admin_and_metrics(admin_client):
    project = make_project(name=f"slow-{uuid.uuid4().hex}")
    api = api_client_for(project.organization)
    Membership.objects.filter(organization=project.organization).update(role=Membership.Role.ADMIN)
    body = api.get(f"/api/projects/{project.id}/").json()
    assert body["ingestion_state"] == {"state": "healthy", "since": None, "why": None}

    [move] = move_to_overflow(project.id)
    body = api.get(f"/api/projects/{project.id}/").json()
    assert body["ingestion_state"]["state"] == "overflow"
    assert body["ingestion_state"]["why"] == move.why
    assert body["ingestion_state"]["since"].endswith("+00:00")

    response = api.patch(f"/api/projects/{project.id}/", {"ingestion_state": {"state": "healthy"}}, format="json")
    assert response.status_code == 200  # read-only: ignored
    assert response.json()["ingestion_state"]["state"] == "overflow"

    other = make_project(organization=project.organization, name=f"fast-{uuid.uuid4().hex}")
    page = admin_client.get("/admin/bklog_app/project/?ingestion_state=overflow").content.decode()
    assert project.name in page and f"overflow: {move.why}" in page and other.name not in page
    page = admin_client.get("/admin/bklog_app/project/?ingestion_state=healthy").content.decode()
    assert other.name in page and f"overflow: {move.why}" not in page

    metrics = render()[0].decode()
    assert 'bklog_projects_ingestion_state{state="overflow"}' in metrics

    response = admin_client.post(
        "/admin/bklog_app/project/", {"action": "back_to_healthy", "_selected_action": [project.pk]}, follow=True
    )
    assert "1 project(s) healthy again" in response.content.decode()
    assert isolation.state_of(project.id) == {"state": "healthy", "since": None, "why": None}
    assert not projects.project_for_token(project.api_token).ingestion_overflow
