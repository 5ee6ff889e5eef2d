"""The capture message: what capture puts on the `ingestion` queue and ingestion reads back.

Defined once, here, for every side that writes or reads it: capture (pipeline/ingestion/capture.py
through enqueue.py), the ingestion task and batch (tasks.py, batch.py), and replay (replay.py).

One captured request is a `CapturedRequest`. A message carries one or more of them (requests of
one web process gathered for a few milliseconds: coalesce.py) as the ingestion task's kwargs,
`{"parts": [request, ...]}`; an older message is one request's fields as the kwargs themselves,
and both forms are read. On the wire it is JSON, zlib-compressed inside Celery's envelope
(publish.py). The types are TypedDicts: the message is JSON in and out, and the capture hot path
pays for no conversion.
"""

import re
from typing import Any, TypedDict
from uuid import UUID

from pipeline.queues import TASK_QUEUES, Queue, TaskName

INGEST_TASK_NAME = TaskName.INGEST_BATCH.value  # the consumer: pipeline/ingestion/tasks.py
INGEST_QUEUE = TASK_QUEUES[TaskName.INGEST_BATCH].value
OVERFLOW_QUEUE = Queue.INGESTION_OVERFLOW.value  # the same task, for projects moved aside (isolation.py)
INGEST_QUEUES = (INGEST_QUEUE, OVERFLOW_QUEUE)
# A message header: how many events the message holds, so the consumer can size a batch without
# decoding the body (pipeline/ingestion/packed.py).
EVENTS_HEADER = "bklog_events"


class CapturedRequest(TypedDict):
    """The events of one capture request and how they came."""

    token: str  # the project token the request carried
    project_id: int | None  # its project when capture accepted it (a rotated token still finds it)
    events: list[dict[str, Any]]  # as the SDK sent them
    ip: str | None  # the client's address
    now: str  # ISO 8601, when capture received the request
    sent_at: str | None  # the SDK's clock when it sent the request, for clock-skew correction


class ReceivedRequest(CapturedRequest):
    """A captured request as ingestion takes it off the queue."""

    id: str  # the id of the message that carried it: dedup claims and the journal name it


def to_wire(requests: list[CapturedRequest]) -> dict[str, Any]:
    """The ingestion task's kwargs for a message carrying `requests`."""
    return {"parts": requests}


def parts_of(kwargs: dict[str, Any]) -> list[CapturedRequest]:
    """The requests in a message's kwargs: the coalesced form, or the older one-request form."""
    parts = kwargs.get("parts")
    return parts if parts is not None else [kwargs]


def from_wire(kwargs: dict[str, Any], message_id: str) -> list[ReceivedRequest]:
    """The requests of the message `message_id`, as ingestion reads them."""
    return [{**part, "id": message_id} for part in parts_of(kwargs)]


def events_in(kwargs: dict[str, Any]) -> int:
    """Events in a message, from its kwargs."""
    return sum(len(part.get("events") or ()) for part in parts_of(kwargs))


def context_of(request: CapturedRequest) -> dict[str, Any]:
    """Everything of a request but its events: kept with a dead-lettered event, for replay."""
    return {key: request.get(key) for key in ("token", "project_id", "ip", "now", "sent_at")}


def from_context(
    context: dict[str, Any], events: list[dict[str, Any]], *, project_id: int | None, now: str
) -> CapturedRequest:
    """A request again, from a dead letter's `context_of` and its events; `now` if it had none."""
    return CapturedRequest(
        token=context.get("token") or "",
        project_id=project_id,
        events=events,
        ip=context.get("ip"),
        now=context.get("now") or now,
        sent_at=context.get("sent_at"),
    )


# An event uuid as SDKs send it and as it is stored: lower-case hex in 8-4-4-4-12 groups.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_uuid(value: Any) -> str:
    """`value` as a canonical uuid string; ValueError if it is not a uuid. What SDKs send is
    canonical already: a regular expression tells so in a fifth of the time parsing takes."""
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value
    return str(UUID(str(value)))
