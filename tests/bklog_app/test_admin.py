"""The Django admin as the operators' console: every changelist, add and change page renders;
the actions work."""

import uuid

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse

from bklog_app.models import DeadLetter, IngestionWarning, Membership, PersonalAPIKey
from pipeline.ingestion.batch import ingest_messages
from tests.factories import make_user_with_key, wait_for_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_superuser("operator", "ops@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def objects(project):
    """At least one object of every core model."""
    user, _ = make_user_with_key(project.organization)
    IngestionWarning.objects.create(project=project, type="event_timestamp_in_future", event_uuid="u", details={})
    message = {"id": str(uuid.uuid4()), "token": project.api_token, "project_id": project.id, "ip": None,
               "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None,
               "events": [{"event": "ok", "distinct_id": "d", "properties": {"color": "blue"}},
                          {"event": "broken", "properties": {}}]}  # fmt: skip
    ingest_messages([message])
    return {"project": project, "user": user}


def test_every_changelist_and_add_page_renders(operator, objects):
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        response = operator.get(reverse(f"admin:{info[0]}_{info[1]}_changelist"))
        assert response.status_code == 200, info
        if model_admin.has_add_permission(response.wsgi_request):
            assert operator.get(reverse(f"admin:{info[0]}_{info[1]}_add")).status_code == 200, info


def test_every_change_page_renders(operator, objects):
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        for pk in model.objects.values_list("pk", flat=True)[:3]:
            response = operator.get(reverse(f"admin:{info[0]}_{info[1]}_change", args=[pk]))
            assert response.status_code == 200, (info, pk)


def test_latest_events_page_reads_clickhouse(operator, objects):
    project = objects["project"]
    wait_for_events(project.id, 1)
    response = operator.get(reverse("admin:bklog_app_project_events", args=[project.id]))
    assert response.status_code == 200
    assert b"blue" in response.content and b"ok" in response.content


@pytest.mark.django_db(transaction=True)
def test_replay_action_requeues_dead_letters(operator, objects, celery_worker):
    project = objects["project"]
    letter = DeadLetter.objects.get(project=project)
    letter.payload = {**letter.payload, "distinct_id": "fixed"}
    letter.save()
    url = reverse("admin:bklog_app_deadletter_changelist")
    response = operator.post(url, {"action": "replay_selected", "_selected_action": [letter.pk]}, follow=True)
    assert response.status_code == 200
    assert b"Queued 1 dead letter" in response.content
    events = wait_for_events(project.id, 2)
    assert {e["event"] for e in events} == {"ok", "broken"}
    assert DeadLetter.objects.get(pk=letter.pk).replayed_at is not None


def test_membership_and_keys_are_searchable(operator, objects):
    user = objects["user"]
    response = operator.get(reverse("admin:bklog_app_personalapikey_changelist"), {"q": user.username})
    assert response.status_code == 200
    assert PersonalAPIKey.objects.filter(user=user).exists()
    assert Membership.objects.filter(user=user).exists()


def test_plugin_config_test_run_page(operator, api_client, project, make_worker):
    # A test run is a task on `default`: a worker of its own, stopped at the end, since the session
    # worker would also consume the ingestion queue that the capture tests after this one read.
    make_worker(role="async")
    plugin = api_client.post(
        "/api/plugins/", {"name": "filter", "source_type": "builtin", "builtin": "property_filter"}, format="json"
    ).json()
    config = api_client.post(
        f"/api/projects/{project.id}/plugin_configs/",
        {"plugin": plugin["id"], "enabled": True, "order": 0, "config": {"properties": "email"}},
        format="json",
    ).json()
    url = reverse("admin:plugins_pluginconfig_test", args=[config["id"]])
    assert operator.get(url).status_code == 200
    event = '{"event": "signed_up", "distinct_id": "u", "properties": {"email": "a@b.c", "plan": "pro"}}'
    response = operator.post(url, {"event": event})
    assert response.status_code == 200
    assert b"&quot;plan&quot;: &quot;pro&quot;" in response.content
    assert b"a@b.c" not in response.content.split(b"Output event")[1]
    assert b"Not JSON" in operator.post(url, {"event": "{nope"}).content
