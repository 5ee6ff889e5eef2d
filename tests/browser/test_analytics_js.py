"""analytics.js (@segment/analytics-next) in headless Chromium, on a page of another origin.

Its settings, which it would fetch from Segment's CDN, are inline on the page: the Segment.io
destination with apiHost at bklog, so track, identify and page go to bklog's short Segment
paths (/v1/t, /v1/i, /v1/p: the first letter of the call), with the write key as HTTP Basic
user (a header that makes each a CORS preflighted request) and in the body. See
docs/contracts.md.
"""

from urllib.parse import urlencode, urlsplit

import pytest

from tests.browser.conftest import run_scenario, summary, wait_for_event_names
from tests.factories import make_project

# Transactional, so the session sets the test database up; the module's rows are its fixtures'.
pytestmark = pytest.mark.django_db(transaction=True)
EXPECTED_EVENTS = {"Signed Up", "$identify", "$pageview"}


@pytest.fixture(scope="module")
def visit(bklog, customer_site, organization, committed) -> dict:
    with committed():
        project = make_project(organization)
    query = urlencode({"token": project.api_token, "api_host": f"127.0.0.1:{bklog.port}/v1"})
    output = run_scenario("analytics_js", {"url": f"{customer_site}/segment.html?{query}"})
    return {**output, "project": project}


@pytest.fixture(scope="module")
def stored(visit) -> list[dict]:
    return wait_for_event_names(visit["project"].id, EXPECTED_EVENTS)


def test_no_console_error(visit):
    assert visit["console_errors"] == []


def test_every_call_is_delivered(visit):
    assert visit["deliveries"] == [
        {"type": "track", "failed": None},
        {"type": "identify", "failed": None},
        {"type": "page", "failed": None},
    ], summary(visit["requests"])


def test_each_call_goes_to_its_short_path_and_is_answered_2xx(visit, bklog):
    requests = [r for r in visit["requests"] if r["url"].startswith(bklog.url)]
    posts = [urlsplit(r["url"]).path for r in requests if r["method"] == "POST"]
    assert posts == ["/v1/t", "/v1/i", "/v1/p"], summary(visit["requests"])
    failed = [r for r in visit["requests"] if r["failure"] or r["status"] is None or not 200 <= r["status"] < 300]
    assert not failed, f"not answered 2xx:\n{summary(failed)}\n\nall requests:\n{summary(visit['requests'])}"


def test_events_are_stored_with_their_distinct_ids(visit, stored):
    by_name = {event["event"]: event for event in stored}
    assert set(by_name) >= EXPECTED_EVENTS, sorted(by_name)
    assert by_name["Signed Up"]["distinct_id"] == visit["anonymous_id"]
    assert by_name["Signed Up"]["properties"]["plan"] == "pro"
    identify = by_name["$identify"]
    assert identify["distinct_id"] == visit["user_id"]
    assert identify["properties"]["$set"]["email"] == f"{visit['user_id']}@example.com"
    assert by_name["$pageview"]["distinct_id"] == visit["user_id"]
    assert len(stored) == 3, [event["event"] for event in stored]
