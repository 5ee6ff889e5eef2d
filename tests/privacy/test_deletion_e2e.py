"""Deleting a person's events, and events by filter, on the real stack: the posthog SDK through a
live server, a real worker running the ClickHouse mutation on 18.16, the events API and a new
export read afterwards. Suppressed ids' later events are dropped and counted."""

import gzip
from datetime import UTC, datetime

import orjson
import pytest
import requests
from posthog import Posthog

from bklog_app.persons.models import Person, PersonDistinctId, PersonOverride
from bklog_app.privacy.models import DeletionRequest, Suppression
from tests.factories import assert_no_more_events, make_user_with_key, wait_for_events
from tests.plugins.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

DAY = datetime(2024, 7, 1, 8, 0, tzinfo=UTC)


class Api:
    def __init__(self, base: str, project_id: int, key: str):
        self.base, self.project_id = base, project_id
        self.headers = {"Authorization": f"Bearer {key}"}

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        url = f"{self.base}/api/projects/{self.project_id}/{path}"
        return requests.request(method, url, headers=self.headers, timeout=30, **kwargs)

    def events(self, **params) -> list[dict]:
        response = self.call("GET", "events/", params={"limit": 1000, **params})
        assert response.status_code == 200, response.text
        return response.json()["results"]

    def finished_deletion(self, deletion_id: int, waiting_for: tuple = ("succeeded", "failed")) -> dict:
        def check():
            body = self.call("GET", f"deletions/{deletion_id}/").json()
            return body if body["status"] in waiting_for else None

        return wait_until(check, timeout=120, interval=0.3, message=f"deletion {deletion_id} to reach {waiting_for}")

    def export_uuids(self) -> set[str]:
        body = {"format": "jsonl", "after": "2024-01-01T00:00:00Z", "before": "2025-01-01T00:00:00Z"}
        response = self.call("POST", "exports/", json=body)
        assert response.status_code == 201, response.text
        export_id = response.json()["id"]
        wait_until(
            lambda: self.call("GET", f"exports/{export_id}/").json()["status"] == "succeeded",
            timeout=60,
            message="the export",
        )
        download = self.call("GET", f"exports/{export_id}/download/")
        return {orjson.loads(line)["uuid"] for line in gzip.decompress(download.content).splitlines()}


@pytest.fixture
def api(live_server, project):
    _, key = make_user_with_key(project.organization)
    return Api(live_server.url, project.id, key)


@pytest.fixture
def sdk(live_server, project):
    client = Posthog(project.api_token, host=live_server.url, gzip=True, flush_at=50, flush_interval=0.2)
    yield client
    client.shutdown()


def capture(sdk: Posthog, distinct_id: str, count: int, event: str = "viewed", minute: int = 0) -> set[str]:
    return {
        str(sdk.capture(event, distinct_id=distinct_id, properties={"i": i}, timestamp=DAY.replace(minute=minute)))
        for i in range(count)
    }


def test_a_deleted_persons_events_are_gone_from_the_api_and_a_new_export_and_stay_out(api, sdk, project, celery_worker):
    anonymous = capture(sdk, "anon-7", 4)
    known = capture(sdk, "user-7", 5)
    others = capture(sdk, "someone-else", 6)
    sdk.flush()
    wait_for_events(project.id, 15)
    # anon-7's person is merged into user-7's: its events keep anon-7's person_id.
    sdk.alias(previous_id="anon-7", distinct_id="user-7")
    sdk.flush()
    wait_for_events(project.id, 16)
    person = Person.objects.get(distinct_ids__distinct_id="user-7")
    assert PersonOverride.objects.filter(override_person_uuid=person.uuid).count() == 1
    assert api.export_uuids() >= anonymous | known | others

    response = api.call("DELETE", f"persons/{person.uuid}/", params={"delete_events": "true", "suppress": "true"})
    assert response.status_code == 202, response.text
    deletion = response.json()
    assert (deletion["kind"], deletion["suppress"]) == ("person", True)
    assert sorted(deletion["filter"]["distinct_ids"]) == ["anon-7", "user-7"]
    assert len(deletion["filter"]["person_ids"]) == 2
    # The database side is gone at once.
    assert not Person.objects.filter(uuid=person.uuid).exists()
    assert not PersonDistinctId.objects.filter(project=project, distinct_id__in=["anon-7", "user-7"]).exists()
    assert not PersonOverride.objects.filter(project=project, override_person_uuid=person.uuid).exists()

    done = api.finished_deletion(deletion["id"])
    assert done["status"] == "succeeded", done
    assert (done["rows_affected"], done["progress"]) == (10, 100)  # 4 + 5 + the alias event
    assert done["requested_by"] is not None and done["finished_at"] is not None
    stored = {row["uuid"] for row in api.events()}
    assert stored == others
    assert api.export_uuids() == others
    listed = api.call("GET", "deletions/").json()["results"]
    assert [row["id"] for row in listed] == [deletion["id"]]

    # Later events of the suppressed ids are dropped and counted; the others' are stored.
    capture(sdk, "user-7", 3, minute=5)
    capture(sdk, "anon-7", 2, minute=5)
    later = capture(sdk, "someone-else", 1, minute=5)
    sdk.flush()
    assert_no_more_events(project.id, 7)
    assert {row["uuid"] for row in api.events()} == others | later
    suppressions = {row["distinct_id"]: row for row in api.call("GET", "suppressions/").json()["results"]}
    assert {key: row["events_dropped"] for key, row in suppressions.items()} == {"user-7": 3, "anon-7": 2}
    assert all(row["active"] and row["deletion_request"] == deletion["id"] for row in suppressions.values())
    assert not Person.objects.filter(distinct_ids__distinct_id__in=["anon-7", "user-7"]).exists()

    # Lifted, the id's events come in again.
    lifted = api.call("POST", f"suppressions/{suppressions['user-7']['id']}/lift/")
    assert lifted.status_code == 200 and lifted.json()["active"] is False
    again = capture(sdk, "user-7", 1, minute=6)
    sdk.flush()
    wait_for_events(project.id, 8)
    assert again <= {row["uuid"] for row in api.events()}


def test_a_filter_deletion_counts_first_then_deletes_what_it_counted(api, sdk, project, celery_worker):
    capture(sdk, "d-1", 5, event="clicked", minute=1)
    capture(sdk, "d-2", 4, event="clicked", minute=2)
    capture(sdk, "d-1", 3, event="kept", minute=1)
    sdk.flush()
    wait_for_events(project.id, 12)

    body = {"event": "clicked", "after": "2024-07-01T08:00:00Z", "before": "2024-07-01T08:02:00Z"}
    response = api.call("POST", "deletions/", json=body)
    assert response.status_code == 202, response.text
    created = response.json()
    assert (created["kind"], created["dry_run"], created["status"]) == ("filter", True, "counting")
    counted = api.finished_deletion(created["id"], waiting_for=("counted", "failed"))
    assert counted["dry_run_count"] == 5
    assert len(api.events(event="clicked")) == 9  # a dry run deletes nothing

    confirmed = api.call("POST", f"deletions/{created['id']}/confirm/")
    assert confirmed.status_code == 202 and confirmed.json()["status"] == "queued"
    done = api.finished_deletion(created["id"])
    assert (done["status"], done["rows_affected"]) == ("succeeded", counted["dry_run_count"])
    assert {row["distinct_id"] for row in api.events(event="clicked")} == {"d-2"}
    assert len(api.events(event="clicked")) == 4 and len(api.events(event="kept")) == 3
    assert DeletionRequest.objects.get(pk=created["id"]).mutation_marker

    again = api.call("POST", f"deletions/{created['id']}/confirm/")
    assert again.status_code == 409
    assert again.json() == {
        "type": "invalid_request",
        "code": "invalid_status",
        "detail": "This deletion request is succeeded; only a counted dry run can be confirmed.",
        "attr": None,
    }


def test_a_deletion_without_a_dry_run_goes_ahead_after_counting(api, sdk, project, celery_worker):
    capture(sdk, "gone", 3)
    capture(sdk, "stays", 2)
    sdk.flush()
    wait_for_events(project.id, 5)
    response = api.call("POST", "deletions/", json={"distinct_id": "gone", "dry_run": False})
    done = api.finished_deletion(response.json()["id"])
    assert (done["status"], done["dry_run_count"], done["rows_affected"]) == ("succeeded", 3, 3)
    assert {row["distinct_id"] for row in api.events()} == {"stays"}
    assert not Suppression.objects.exists()
