"""The real `posthog` Python SDK against a live server and a real worker: batched, gzipped,
its uuids and millisecond timestamps kept, readable from the events API."""

import time
from datetime import UTC, datetime

import pytest
import requests
from posthog import Posthog

from tests.factories import make_user_with_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.mark.parametrize("gzip", [True, False])
def test_sdk_events_are_readable_from_the_api(live_server, project, celery_worker, gzip):
    _, key = make_user_with_key(project.organization)
    sdk = Posthog(project.api_token, host=live_server.url, gzip=gzip, flush_at=50, flush_interval=0.2)
    sent = []
    for i in range(120):
        timestamp = datetime(2024, 7, 1, 8, 0, i % 60, (i * 1000) % 1_000_000, tzinfo=UTC)
        uuid = sdk.capture("sdk_event", distinct_id=f"sdk-user-{i % 7}", properties={"i": i}, timestamp=timestamp)
        sent.append((uuid, timestamp))
    sdk.set(distinct_id="sdk-user-1", properties={"plan": "pro"})
    started = time.monotonic()
    sdk.flush()
    sdk.shutdown()

    url = f"{live_server.url}/api/projects/{project.id}/events/?limit=1000&event=sdk_event"
    results: list[dict] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(results) < len(sent):
        results = requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10).json()["results"]
        time.sleep(0.1)
    print(f"\nposthog SDK (gzip={gzip}): {len(results)} events readable {time.monotonic() - started:.2f}s after flush")

    by_uuid = {row["uuid"]: row for row in results}
    assert set(by_uuid) == {str(uuid) for uuid, _ in sent}
    for uuid, timestamp in sent:
        stored = by_uuid[str(uuid)]["timestamp"]
        # Millisecond precision, with PostHog's clock-skew correction (the SDK and this server
        # share a clock, so the correction is the request's transit time only).
        assert len(stored) == len("2024-07-01T08:00:00.000Z")
        skew = abs(datetime.fromisoformat(stored.replace("Z", "+00:00")) - timestamp).total_seconds()
        assert skew < 5
