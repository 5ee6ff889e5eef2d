"""posthog-js in headless Chromium, on a page served from another origin, against real Gunicorn.

Two builds of posthog-js, one project each: array.js (what PostHog's snippet loads; it asks for
the remote config as a script, /array/<token>/config.js) and array.full.no-external.js (every
extension inside, no script loading; it asks for /array/<token>/config as JSON). On each page
a visitor views it, triggers a custom event, clicks a <button> (autocapture), is identified and
leaves (the last event goes out by sendBeacon); the page also reloads its feature flags. See
docs/contracts.md for the endpoints.
"""

from urllib.parse import urlencode, urlsplit

import pytest

from tests.browser.conftest import run_scenario, summary, wait_for_event_names
from tests.factories import make_project

CONFIG_REQUEST = {"array.js": "config.js", "array.full.no-external.js": "config"}
CAPTURE_PATHS = {"/e/", "/e", "/i/v0/e/", "/i/v0/e", "/capture/", "/track/", "/batch/", "/engage/"}
EXPECTED_EVENTS = {"$pageview", "bklog_custom", "$autocapture", "$identify", "bklog_left_page"}
bundles = pytest.mark.parametrize("bundle", list(CONFIG_REQUEST))
# Transactional, so the session sets the test database up (a test without the mark would not);
# the module's rows are committed by its fixtures and read there, before the first flush.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def visits(bklog, customer_site, organization, committed) -> dict:
    """Each page's visit: its requests and console, then its stored events once every expected
    one has arrived, and the person each of its two distinct ids belongs to (read here, before
    the first test's flush empties the tables)."""
    from bklog_app.persons.models import PersonDistinctId

    with committed():
        projects = {bundle: make_project(organization) for bundle in CONFIG_REQUEST}
    pages = [
        {"bundle": bundle, "url": f"{customer_site}/posthog/{bundle}.html?" + urlencode(
            {"token": project.api_token, "api_host": bklog.url})}
        for bundle, project in projects.items()
    ]  # fmt: skip
    visits = {visit["bundle"]: visit for visit in run_scenario("posthog_js", {"pages": pages})["visits"]}
    for bundle, visit in visits.items():
        visit["project"] = project = projects[bundle]
        visit["events"] = wait_for_event_names(project.id, EXPECTED_EVENTS)
        with committed():
            persons = PersonDistinctId.objects.filter(
                project=project, distinct_id__in=[visit["anonymous_id"], visit["user_id"]]
            ).values_list("distinct_id", "person_id")
            visit["persons"] = {distinct_id: str(person) for distinct_id, person in persons}
    return visits


def bklog_requests(visit: dict, bklog_url: str) -> list[dict]:
    return [request for request in visit["requests"] if request["url"].startswith(bklog_url)]


@bundles
def test_no_console_error(visits, bundle):
    assert visits[bundle]["console_errors"] == []


@bundles
def test_every_request_is_answered_2xx(visits, bundle):
    requests = [request for request in visits[bundle]["requests"] if request["url"] != "about:blank"]
    failed = [r for r in requests if r["failure"] or r["status"] is None or not 200 <= r["status"] < 300]
    assert not failed, f"not answered 2xx:\n{summary(failed)}\n\nall requests:\n{summary(requests)}"


@bundles
def test_remote_config_and_flags_are_asked_for(visits, bundle, bklog):
    """The remote config on start; flags when posthog-js wants them (on start unless the config
    says the project has none, and whenever the page calls posthog.reloadFeatureFlags())."""
    visit = visits[bundle]
    token = visit["project"].api_token
    requests = bklog_requests(visit, bklog.url)
    paths = [(r["method"], urlsplit(r["url"]).path, r["status"]) for r in requests]
    assert ("GET", f"/array/{token}/{CONFIG_REQUEST[bundle]}", 200) in paths, summary(requests)
    flags = [r for r in requests if urlsplit(r["url"]).path in ("/flags/", "/flags")]
    assert flags, summary(requests)
    assert all(r["method"] == "POST" and "v=2" in urlsplit(r["url"]).query for r in flags), summary(flags)
    assert all(r["status"] == 200 for r in flags), summary(flags)


@bundles
def test_events_are_sent_gzipped(visits, bundle, bklog):
    """Compression is on only when the remote config offers gzip-js: every capture body is gzip."""
    visit = visits[bundle]
    captures = [r for r in bklog_requests(visit, bklog.url) if urlsplit(r["url"]).path in CAPTURE_PATHS]
    assert visit["pageview_sent"], summary(visit["requests"])
    assert captures, summary(visit["requests"])
    assert all(r["body_kind"] == "gzip" for r in captures), summary(captures)


@bundles
def test_leaving_the_page_sends_the_rest_by_beacon(visits, bundle, bklog):
    visit = visits[bundle]
    beacons = [r for r in bklog_requests(visit, bklog.url) if r["type"] == "Ping"]
    assert visit["beacon_sent"] and beacons, summary(visit["requests"])
    assert all(urlsplit(r["url"]).path in CAPTURE_PATHS and r["status"] == 200 for r in beacons), summary(beacons)


@bundles
def test_events_are_stored_with_their_distinct_ids(visits, bundle):
    visit, events = visits[bundle], visits[bundle]["events"]
    by_name = {}
    for event in events:
        by_name.setdefault(event["event"], []).append(event)
    assert set(by_name) >= EXPECTED_EVENTS, sorted(by_name)
    anonymous, user = visit["anonymous_id"], visit["user_id"]
    assert visit["identified_id"] == user
    assert {e["distinct_id"] for e in by_name["$pageview"]} == {anonymous}
    assert [e["distinct_id"] for e in by_name["bklog_custom"]] == [anonymous]
    assert by_name["bklog_custom"][0]["properties"]["plan"] == "pro"
    assert [e["distinct_id"] for e in by_name["$identify"]] == [user]
    assert by_name["$identify"][0]["properties"]["$anon_distinct_id"] == anonymous
    assert [e["distinct_id"] for e in by_name["bklog_left_page"]] == [user]
    assert len({e["uuid"] for e in events}) == len(events)


@bundles
def test_a_click_on_a_button_is_autocaptured_with_its_elements_chain(visits, bundle):
    clicks = [event for event in visits[bundle]["events"] if event["event"] == "$autocapture"]
    assert len(clicks) == 1, clicks
    chain = clicks[0]["elements_chain"]
    assert chain.startswith("button"), chain
    assert 'text="Buy now"' in chain and 'attr__id="buy"' in chain, chain
    assert clicks[0]["properties"]["$event_type"] == "click"


@bundles
def test_identify_merges_the_anonymous_person(visits, bundle):
    visit, persons = visits[bundle], visits[bundle]["persons"]
    assert set(persons) == {visit["anonymous_id"], visit["user_id"]}
    assert len(set(persons.values())) == 1
    identified = [e for e in visit["events"] if e["distinct_id"] == visit["user_id"]]
    assert {str(e["person_id"]) for e in identified} == set(persons.values())
