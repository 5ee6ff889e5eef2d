"""Segment compatibility, with the real `segment-analytics-python` client against a live server."""

import pytest
from segment.analytics.client import Client

from tests.factories import wait_for_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_client_messages_are_stored_with_the_mapping(live_server, project, celery_worker, gzip):
    errors = []
    client = Client(project.api_token, host=live_server.url, sync_mode=True, gzip=gzip, max_retries=1,
                    on_error=lambda error, items: errors.append(error))  # fmt: skip
    client.identify("user-1", {"email": "ada@example.com", "plan": "pro"}, anonymous_id="anon-1")
    client.track("user-1", "Order Completed", {"revenue": 42})
    client.track(anonymous_id="anon-2", event="Viewed")
    client.alias("anon-3", "user-1")
    client.group("user-1", "acme-inc", {"name": "Acme", "employees": 10})
    client.page("user-1", "Docs", "Getting started", {"url": "https://example.com/docs"})
    client.screen("user-1", "App", "Home")
    client.flush()
    assert errors == []

    stored = {e["event"]: e for e in wait_for_events(project.id, 7)}
    assert set(stored) == {
        "$identify",
        "Order Completed",
        "Viewed",
        "$create_alias",
        "$groupidentify",
        "$pageview",
        "$screen",
    }
    identify = stored["$identify"]
    assert identify["distinct_id"] == "user-1"
    assert identify["properties"]["$set"] == {"email": "ada@example.com", "plan": "pro"}
    assert identify["properties"]["$anon_distinct_id"] == "anon-1"
    assert stored["Order Completed"]["properties"]["revenue"] == 42
    assert stored["Viewed"]["distinct_id"] == "anon-2"
    assert stored["$create_alias"]["distinct_id"] == "user-1"
    assert stored["$create_alias"]["properties"]["alias"] == "anon-3"
    assert stored["$groupidentify"]["properties"]["$group_key"] == "acme-inc"
    assert stored["$pageview"]["properties"]["$current_url"] == "https://example.com/docs"
    assert stored["$screen"]["properties"]["$screen_name"] == "Home"
    assert stored["Order Completed"]["properties"]["$lib"] == "analytics-python"


def test_write_key_in_body_and_errors(client, project):
    import orjson

    body = {
        "writeKey": project.api_token,
        "batch": [{"type": "track", "event": "x", "userId": "u", "messageId": "m-1"}],
    }
    response = client.post("/v1/batch", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 200 and response.json() == {"success": True}
    body["writeKey"] = "wrong"
    response = client.post("/v1/batch", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 401 and response.json()["code"] == "invalid_api_key"
    body = {"writeKey": project.api_token, "batch": [{"type": "track", "event": "x"}]}
    response = client.post("/v1/batch", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 400 and response.json()["attr"] == "distinct_id"
