"""posthog-node (the server-side JavaScript SDK) against real Gunicorn, in its two capture modes.

Default (v0): batches POSTed to /batch/ with the token in the body. Capture v1, which the SDK
turns on only through its environment (POSTHOG_CAPTURE_MODE=v1; there is no option in the
constructor): POST /i/v1/analytics/events with `Authorization: Bearer <token>`, gzip, and a
per-event result map in the answer. See docs/contracts.md.
"""

import uuid
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import run_scenario, summary, wait_for_event_names
from tests.factories import make_project

# Transactional, so the session sets the test database up; the module's rows are its fixtures'.
pytestmark = pytest.mark.django_db(transaction=True)
MODES = {"v0": "/batch/", "v1": "/i/v1/analytics/events"}
EXPECTED_EVENTS = {"node_signed_up", "node_purchase", "$identify", "$create_alias"}


@pytest.fixture(scope="module")
def runs(bklog, organization, committed) -> dict:
    runs = {}
    for mode in MODES:
        with committed():
            project = make_project(organization)
        distinct_id = f"node-{mode}-{uuid.uuid4().hex[:8]}"
        scenario = {"host": bklog.url, "token": project.api_token, "distinct_id": distinct_id}
        output = run_scenario("posthog_node", scenario, POSTHOG_CAPTURE_MODE=mode)
        runs[mode] = {**output, "project": project, "distinct_id": distinct_id}
    for run in runs.values():
        run["events"] = wait_for_event_names(run["project"].id, EXPECTED_EVENTS)
    return runs


@pytest.mark.parametrize("mode", list(MODES))
def test_the_sdk_sends_to_its_modes_path_and_reports_no_error(runs, mode):
    run = runs[mode]
    assert run["capture_mode"] == mode
    paths = {urlsplit(r["url"]).path for r in run["requests"]}
    assert paths == {MODES[mode]}, summary(run["requests"])
    assert all(r["status"] == 200 for r in run["requests"]), summary(run["requests"])
    assert run["errors"] == []


def test_capture_v1_authenticates_with_a_bearer_token_and_gets_a_result_per_event(runs):
    import orjson

    run = runs["v1"]
    assert run["requests"], "no request"
    for request in run["requests"]:
        assert request["request_headers"]["Authorization"] == f"Bearer {run['project'].api_token}"
        assert request["request_headers"]["Content-Encoding"] == "gzip"
        results = orjson.loads(request["body"])["results"]
        assert results and all(result["result"] == "ok" for result in results.values()), request["body"]


@pytest.mark.parametrize("mode", list(MODES))
def test_events_are_stored(runs, mode):
    run = runs[mode]
    by_name = {event["event"]: event for event in run["events"]}
    assert set(by_name) >= EXPECTED_EVENTS, sorted(by_name)
    assert {event["distinct_id"] for event in run["events"]} == {run["distinct_id"]}
    assert by_name["node_purchase"]["properties"]["amount"] == 42
    assert by_name["node_purchase"]["properties"]["$lib"] == "posthog-node"
    assert by_name["$create_alias"]["properties"]["alias"] == f"{run['distinct_id']}-alias"
    assert len(run["events"]) == len(EXPECTED_EVENTS)
