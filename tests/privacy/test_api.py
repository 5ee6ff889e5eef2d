"""The privacy API: what it accepts (exact error bodies), who sees what, and the status rules.
Nothing runs a worker here (no deletion task is consumed); tests/privacy/test_deletion_e2e.py
runs them."""

import pytest

from bklog_app.privacy.models import DeletionRequest, DeletionStatus, Suppression
from tests.factories import api_client_for, make_project
from tests.persons.helpers import normalised, resolve

pytestmark = pytest.mark.django_db(transaction=True)


def url(project, *parts) -> str:
    return "/".join([f"/api/projects/{project.id}", *map(str, parts)]) + "/"


EMPTY = (
    "Give at least one of event, distinct_id, after, before; deleting all of a project's events is not done by filter."
)


@pytest.mark.parametrize(
    "body, attr, detail",
    [
        ({}, "non_field_errors", EMPTY),
        ({"dry_run": False}, "non_field_errors", EMPTY),
        ({"after": "yesterday"}, "after", "Must be an ISO 8601 time, such as 2024-01-31T12:00:00Z."),
        (
            {"after": "2024-03-02T00:00:00Z", "before": "2024-03-01T00:00:00Z"},
            "before",
            "'before' must be later than 'after'.",
        ),
        ({"event": "x" * 201}, "event", "Ensure this field has no more than 200 characters."),
        ({"event": "a", "dry_run": "maybe"}, "dry_run", "Must be a valid boolean."),
    ],
)
def test_a_bad_filter_answers_400_with_the_field(api_client, project, body, attr, detail):
    response = api_client.post(url(project, "deletions"), body, format="json")
    assert response.status_code == 400
    error = response.json()
    assert error == {"type": "validation_error", "code": error["code"], "detail": detail, "attr": attr}
    assert not DeletionRequest.objects.exists()


def test_a_filter_deletion_is_recorded_with_who_asked(api_client, project):
    body = {"event": "signed_up", "distinct_id": "u1", "after": "2024-03-01T00:00:00+01:00"}
    response = api_client.post(url(project, "deletions"), body, format="json")
    assert response.status_code == 202, response.content
    data = response.json()
    assert data["filter"] == {"event": "signed_up", "distinct_id": "u1", "after": "2024-02-29T23:00:00Z"}
    assert (data["kind"], data["status"], data["dry_run"], data["dry_run_count"]) == ("filter", "counting", True, None)
    assert data["requested_by"] == DeletionRequest.objects.get().requested_by.get_username()


def test_only_a_counted_dry_run_is_confirmed(api_client, project):
    item = DeletionRequest.objects.create(project=project, kind="filter", filter={"event": "a"}, dry_run=True)
    response = api_client.post(url(project, "deletions", item.pk, "confirm"))
    assert response.status_code == 409
    assert response.json() == {
        "type": "invalid_request",
        "code": "invalid_status",
        "detail": "This deletion request is counting; only a counted dry run can be confirmed.",
        "attr": None,
    }
    DeletionRequest.objects.filter(pk=item.pk).update(status=DeletionStatus.COUNTED, dry_run_count=4)
    response = api_client.post(url(project, "deletions", item.pk, "confirm"))
    assert response.status_code == 202 and response.json()["status"] == "queued"


def test_other_organizations_see_nothing(api_client, project):
    item = DeletionRequest.objects.create(project=project, kind="filter", filter={"event": "a"})
    suppression = Suppression.objects.create(project=project, distinct_id="x")
    outsider = api_client_for(make_project().organization)
    for response in (
        outsider.get(url(project, "deletions")),
        outsider.get(url(project, "deletions", item.pk)),
        outsider.post(url(project, "deletions", item.pk, "confirm")),
        outsider.post(url(project, "deletions"), {"event": "a"}, format="json"),
        outsider.get(url(project, "suppressions")),
        outsider.post(url(project, "suppressions", suppression.pk, "lift")),
    ):
        assert response.status_code == 404
        assert response.json()["type"] == "invalid_request"
    assert api_client.get(url(project, "deletions", 10**9)).json()["detail"] == "No such deletion request."
    assert DeletionRequest.objects.count() == 1 and Suppression.objects.get().lifted_at is None


def test_suppressions_are_added_listed_and_lifted_once(api_client, project):
    first = api_client.post(url(project, "suppressions"), {"distinct_id": "u1", "reason": "GDPR"}, format="json")
    assert first.status_code == 201
    same = api_client.post(url(project, "suppressions"), {"distinct_id": "u1"}, format="json")
    assert same.json()["id"] == first.json()["id"]  # suppressed already: the active one
    response = api_client.post(url(project, "suppressions"), {"reason": "x"}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "type": "validation_error",
        "code": "required",
        "detail": "This field is required.",
        "attr": "distinct_id",
    }

    lifted = api_client.post(url(project, "suppressions", first.json()["id"], "lift"))
    assert lifted.status_code == 200 and lifted.json()["active"] is False
    twice = api_client.post(url(project, "suppressions", first.json()["id"], "lift"))
    assert twice.status_code == 409
    assert twice.json() == {
        "type": "invalid_request",
        "code": "lifted",
        "detail": "This suppression was lifted already.",
        "attr": None,
    }
    again = api_client.post(url(project, "suppressions"), {"distinct_id": "u1"}, format="json")
    assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
    active = api_client.get(url(project, "suppressions"), {"active": "true"}).json()["results"]
    assert [row["id"] for row in active] == [again.json()["id"]]
    assert len(api_client.get(url(project, "suppressions")).json()["results"]) == 2


def test_person_delete_rejects_a_bad_flag_and_keeps_the_person(api_client, project):
    [(person_id, _)], _ = resolve(project.id, [normalised("e", "alice")])
    response = api_client.delete(url(project, "persons", person_id) + "?delete_events=maybe")
    assert response.status_code == 400
    assert response.json() == {
        "type": "validation_error",
        "code": "invalid",
        "detail": "Must be a valid boolean.",
        "attr": "delete_events",
    }
    plain = api_client.delete(url(project, "persons", person_id))
    assert plain.status_code == 204 and not DeletionRequest.objects.exists()
