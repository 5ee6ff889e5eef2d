"""The admin side of privacy: deleting persons with their events (and suppressing their ids) from
the person list, confirming dry runs, lifting suppressions."""

import pytest
from django.contrib.auth import get_user_model

from bklog_app.persons.models import Person, PersonDistinctId
from bklog_app.privacy.models import DeletionRequest, DeletionStatus, Suppression
from tests.persons.helpers import normalised, resolve

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_the_person_action_deletes_persons_queues_their_events_and_suppresses_their_ids(admin_client, project):
    resolve(project.id, [normalised("$identify", "user", **{"$anon_distinct_id": "anon"}), normalised("e", "bob")])
    person = PersonDistinctId.objects.get(distinct_id="user").person
    response = admin_client.post(
        "/admin/persons/person/",
        {"action": "delete_with_events_and_suppress", "_selected_action": [str(person.uuid)]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Deleted 1 person(s)" in response.content.decode()
    assert list(Person.objects.values_list("distinct_ids__distinct_id", flat=True)) == ["bob"]
    request = DeletionRequest.objects.get()
    assert (request.kind, request.suppress, request.requested_by.username) == ("person", True, "root")
    assert sorted(request.filter["distinct_ids"]) == ["anon", "user"]
    assert sorted(Suppression.objects.values_list("distinct_id", flat=True)) == ["anon", "user"]
    assert admin_client.get("/admin/privacy/deletionrequest/").status_code == 200


def test_confirm_and_lift_actions(admin_client, project):
    counted = DeletionRequest.objects.create(
        project=project, kind="filter", filter={"event": "a"}, dry_run=True, status=DeletionStatus.COUNTED
    )
    done = DeletionRequest.objects.create(project=project, kind="filter", filter={}, status=DeletionStatus.SUCCEEDED)
    response = admin_client.post(
        "/admin/privacy/deletionrequest/",
        {"action": "confirm_dry_runs", "_selected_action": [counted.pk, done.pk]},
        follow=True,
    )
    html = response.content.decode()
    assert "Confirmed 1 deletion request(s)" in html and "Only counted dry runs can be confirmed" in html
    # Queued, and from there on a worker's, if one runs in this session.
    assert DeletionRequest.objects.get(pk=counted.pk).status != DeletionStatus.COUNTED
    assert DeletionRequest.objects.get(pk=done.pk).status == DeletionStatus.SUCCEEDED

    item = Suppression.objects.create(project=project, distinct_id="x")
    response = admin_client.post(
        "/admin/privacy/suppression/", {"action": "lift", "_selected_action": [item.pk]}, follow=True
    )
    assert "Lifted 1 suppression(s)" in response.content.decode()
    item.refresh_from_db()
    assert item.lifted_at is not None and item.lifted_by.username == "root"
