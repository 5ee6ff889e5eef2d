"""Put captured requests on the `ingestion` queue: the publishing half of ingestion.

A project in overflow (pipeline/ingestion/isolation.py) has its requests put on
`ingestion_overflow` instead: the caller names the queue.

The web process publishes and the worker consumes (pipeline/ingestion/tasks.py). This module is
all the web process needs, so it imports no task module and not celery-batches (.importlinter
holds that): the message is built for the task by its name (message.INGEST_TASK_NAME).

With a Redis broker a request goes into a message it may share with other requests of this
process (coalesce.py), pushed by capture's own one-command publish and recorded in the capture
journal in the same step (publish.py, journal.py). Any other broker gets `send_task`.
"""

import uuid
from functools import lru_cache, partial

import orjson
from celery import current_app
from django.conf import settings

from pipeline.ingestion import publish
from pipeline.ingestion.coalesce import Coalescer, Guard
from pipeline.ingestion.message import (
    EVENTS_HEADER,
    INGEST_QUEUE,
    INGEST_QUEUES,
    INGEST_TASK_NAME,
    CapturedRequest,
    events_in,
    parts_of,
    to_wire,
)
from pipeline.metrics import CAPTURE_MESSAGES

_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5}


def enqueue(request: CapturedRequest, *, guard: Guard = None, coalesce: bool = True, queue: str = INGEST_QUEUE) -> None:
    """Publish one captured request on `queue` (`ingestion` or `ingestion_overflow`), in a message
    it may share with other requests of this process. `coalesce=False`: a message of its own, at
    once, for callers that publish one after another and would wait out the linger each time.

    Returns once the message is in the broker; raises if the broker did not take it, and
    publish.GuardChanged if a `guard` (see publish.publish) no longer holds."""
    if not publish.is_redis_broker():
        if guard is not None:
            raise ValueError("a guard needs a Redis broker (publish.can_guard_with)")
        kwargs = to_wire([request])
        current_app.send_task(
            INGEST_TASK_NAME,
            kwargs=kwargs,
            queue=queue,
            headers={EVENTS_HEADER: events_in(kwargs)},
            retry=True,
            retry_policy=_RETRY_POLICY,
        )
        return
    if coalesce:
        _coalescer(settings.CAPTURE_LINGER_MS, settings.CAPTURE_COALESCE_EVENTS, queue).submit(request, guard)
    else:
        _publish_parts([request], guard, queue=queue)


@lru_cache(maxsize=8)
def _coalescer(linger_ms: float, max_events: int, queue: str) -> Coalescer:
    """This process's coalescer for `queue`; keyed by its settings, so a test that overrides them
    gets its own."""
    return Coalescer(partial(_publish_parts, queue=queue), linger_seconds=linger_ms / 1000, max_events=max_events)


def _publish_parts(parts: list[CapturedRequest], guard: Guard, *, queue: str) -> None:
    publish_journaled(to_wire(parts), guard=guard, queue=queue)
    CAPTURE_MESSAGES.inc()


def publish_journaled(kwargs: dict, *, guard: Guard = None, queue: str = INGEST_QUEUE) -> str:
    """Push one ingestion message (kwargs: message.to_wire) on `queue` and record it in the capture
    journal; returns its id. The hot path of capture (publish.py says why it is not apply_async)."""
    message_id = str(uuid.uuid4())
    events = events_in(kwargs)
    kwargsrepr = f"{{'parts': <{len(parts_of(kwargs))} requests, {events} events>}}"
    message = publish.task_message(
        INGEST_TASK_NAME, queue, kwargs, kwargsrepr, task_id=message_id, headers={EVENTS_HEADER: events}
    )
    publish.publish(queue, message, guard=guard, journal_id=message_id)
    return message_id


def republish(raw: bytes) -> str:
    """A message the journal sweep found lost, as a new message (new id) with the same requests,
    on the queue it was pushed to."""
    _args, kwargs, _embed = publish.message_body(raw)
    return publish_journaled(to_wire(parts_of(kwargs)), queue=_queue_of(raw))


def _queue_of(raw: bytes) -> str:
    queue = orjson.loads(raw).get("properties", {}).get("delivery_info", {}).get("routing_key")
    return queue if queue in INGEST_QUEUES else INGEST_QUEUE
