"""An ingestion batch's fixed cost in Redis round trips (docs/performance.md#where-the-time-goes):
a warm one-project batch of fresh single-event messages makes the same six, whatever it holds."""

import uuid
from datetime import UTC, datetime

import pytest
import redis

from pipeline.ingestion.tasks import ingest_batch

pytestmark = pytest.mark.django_db(transaction=True)


class Request:
    """What the task reads of a message: its id, kwargs and delivery info."""

    def __init__(self, kwargs: dict) -> None:
        self.id = str(uuid.uuid4())
        self.kwargs = kwargs
        self.delivery_info = {"routing_key": "ingestion"}


def single_event_messages(project, count: int) -> list[Request]:
    now = datetime.now(UTC).isoformat()
    parts = [
        {
            "token": project.api_token,
            "project_id": project.id,
            "ip": None,
            "now": now,
            "sent_at": None,
            "events": [{"event": "page", "distinct_id": f"user-{i}", "uuid": str(uuid.uuid4())}],
        }
        for i in range(count)
    ]
    return [Request({"parts": [part]}) for part in parts]


@pytest.fixture
def round_trips(monkeypatch):
    """Each Redis round trip, as the command's name or a pipeline's names, recorded on its way."""
    sent = []
    execute_command, execute_pipeline = redis.Redis.execute_command, redis.client.Pipeline.execute

    def command(self, *args, **options):
        sent.append(str(args[0]))
        return execute_command(self, *args, **options)

    def pipeline(self, raise_on_error=True):
        sent.append([str(args[0]) for args, _ in self.command_stack])
        return execute_pipeline(self, raise_on_error)

    monkeypatch.setattr(redis.Redis, "execute_command", command)
    monkeypatch.setattr(redis.client.Pipeline, "execute_command", redis.client.Pipeline.__dict__["execute_command"])
    monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline)
    return sent


@pytest.mark.parametrize("count", [1, 57])
def test_a_batch_makes_six_redis_round_trips_whatever_it_holds(project, round_trips, count):
    assert ingest_batch.run(single_event_messages(project, count))  # caches warm, persons made
    round_trips.clear()
    assert ingest_batch.run(single_event_messages(project, count))
    assert round_trips == [
        "GET",  # the projects' epoch, moving overflow projects aside
        "GET",  # the same, step 1
        "MGET",  # suppression tokens
        "EVALSHA",  # dedup claims
        ["SET"] * count + ["HINCRBY", "EXPIRE", "SET", "SET"],  # done marks, volumes, status
        ["ZREM", "HDEL"],  # the journal forgets the messages
    ]
