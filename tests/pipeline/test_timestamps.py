"""Step 3 of docs/contracts.md#ingestion-order: timestamps, clock-skew correction, warnings, milliseconds."""

import uuid
from datetime import UTC, datetime

import pytest

from pipeline.ingestion.batch import ingest_messages
from pipeline.ingestion.timestamps import resolve_timestamp
from pipeline.storage.events import list_events

NOW = datetime(2024, 5, 1, 5, 0, 0, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_vector_clock_skew_correction():
    result, warnings = resolve_timestamp({"timestamp": "2024-05-01T05:08:00Z"}, NOW, "2024-05-01T05:10:00Z")
    assert iso(result) == "2024-05-01T04:58:00.000Z"
    assert warnings == []


def test_vector_offset():
    now = datetime(2024, 5, 1, 12, 0, 5, 200_000, tzinfo=UTC)
    result, _ = resolve_timestamp({"offset": 150}, now, None)
    assert iso(result) == "2024-05-01T12:00:05.050Z"


def test_timestamp_only_and_none():
    assert iso(resolve_timestamp({"timestamp": "2024-05-01T01:02:03.456Z"}, NOW, None)[0]) == "2024-05-01T01:02:03.456Z"
    assert resolve_timestamp({}, NOW, None)[0] == NOW


def test_ignore_sent_at_property():
    event = {"timestamp": "2024-05-01T05:08:00Z", "properties": {"$ignore_sent_at": True}}
    assert iso(resolve_timestamp(event, NOW, "2024-05-01T05:10:00Z")[0]) == "2024-05-01T05:08:00.000Z"


def test_unparseable_sent_at_is_ignored_with_warning():
    result, warnings = resolve_timestamp({"timestamp": "2024-05-01T05:08:00Z"}, NOW, "yesterday-ish")
    assert iso(result) == "2024-05-01T05:08:00.000Z"
    assert [w[0] for w in warnings] == ["ignored_invalid_timestamp"]


def test_a_request_time_of_another_type_reads_as_it_would_uncached():
    """A request's `sent_at` is parsed once for all its events when it is a string; epoch
    milliseconds still correct the skew, and a value no parse reads is still a warning."""
    event = {"timestamp": "2024-05-01T05:08:00Z"}
    ten_past = int(datetime(2024, 5, 1, 5, 10, tzinfo=UTC).timestamp() * 1000)
    assert resolve_timestamp(event, NOW, ten_past) == resolve_timestamp(event, NOW, "2024-05-01T05:10:00Z")
    for unreadable in (["2024-05-01T05:10:00Z"], {"at": 1}, True):
        result, warnings = resolve_timestamp(event, NOW, unreadable)
        assert iso(result) == "2024-05-01T05:08:00.000Z"
        assert warnings == [("ignored_invalid_timestamp", {"field": "sent_at", "value": str(unreadable)})]


def test_more_than_23h_in_future_is_now_with_warning():
    result, warnings = resolve_timestamp({"timestamp": "2024-05-02T04:00:01Z"}, NOW, None)
    assert result == NOW
    assert [w[0] for w in warnings] == ["event_timestamp_in_future"]
    result, warnings = resolve_timestamp({"timestamp": "2024-05-02T03:59:59Z"}, NOW, None)
    assert result != NOW and warnings == []


@pytest.mark.django_db
def test_vectors_survive_storage_with_milliseconds(project):
    """The two examples of docs/contracts.md#ingestion-order through ClickHouse and back, to the millisecond."""
    skewed, offset = str(uuid.uuid4()), str(uuid.uuid4())
    base = {"token": project.api_token, "project_id": project.id, "ip": "1.2.3.4"}
    report = ingest_messages(
        [
            {**base, "id": "m1", "now": "2024-05-01T05:00:00.000+00:00", "sent_at": "2024-05-01T05:10:00Z",
             "events": [{"event": "a", "distinct_id": "d", "uuid": skewed, "timestamp": "2024-05-01T05:08:00Z"}]},
            {**base, "id": "m2", "now": "2024-05-01T12:00:05.200+00:00", "sent_at": None,
             "events": [{"event": "b", "distinct_id": "d", "uuid": offset, "offset": 150}]},
        ]
    )  # fmt: skip
    assert report.stored == 2
    stored = {row["uuid"]: row for row in list_events(project.id)}
    assert stored[skewed]["timestamp"] == "2024-05-01T04:58:00.000Z"
    assert stored[offset]["timestamp"] == "2024-05-01T12:00:05.050Z"
    assert stored[skewed]["properties"]["$ip"] == "1.2.3.4"
    assert stored[skewed]["properties"]["$sent_at"] == "2024-05-01T05:10:00Z"
