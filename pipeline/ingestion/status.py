"""Ingestion liveness, kept in Redis: when a batch was last stored and how much is waiting."""

import time

from redis.client import Pipeline

from pipeline.queues import Queue
from pipeline.redis import get_redis

LAST_INGESTED_KEY = "bklog:ingestion:last_ingested_at"
LATEST_EVENT_TS_KEY = "bklog:ingestion:latest_event_timestamp_ms"


def record_ingested(latest_event_timestamp_ms: int, pipe: Pipeline) -> None:
    """Add to `pipe` (the batch's writes after its INSERT) the time and the latest event stored."""
    pipe.set(LAST_INGESTED_KEY, f"{time.time():.3f}")
    if latest_event_timestamp_ms:
        pipe.set(LATEST_EVENT_TS_KEY, latest_event_timestamp_ms)


def last_ingested_at() -> float | None:
    value = get_redis().get(LAST_INGESTED_KEY)
    return float(value) if value else None


def queue_depth(queue: Queue) -> int:
    """Messages waiting in a queue (Celery's Redis transport keeps each queue as a list)."""
    return int(get_redis().llen(queue.value))
