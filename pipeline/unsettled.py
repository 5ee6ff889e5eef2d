"""Messages a worker could not settle, which its unacked refresher then lets go.

A message is acknowledged once its work is done (an ingestion batch stored, a task finished), or
requeued when it failed. If the acknowledgement or the requeue itself fails (Redis timed out, or
was away for a moment while the consumer's own connection survived), kombu still counts the
message among those its channel holds, and the worker's refresher (bklog_app/unacked_refresh.py)
would score it afresh for as long as the worker lives. Nothing would then bring it back: kombu
restores only messages whose score grows old, and the capture journal counts an unacknowledged
message as being processed. After a failed requeue of an ingestion batch its events would never
be stored.

`SettleLog` is the logger kombu reports such a failure to (`Message.ack_log_error` and
`reject_log_error` call `critical` with the delivery tag); it records the tag here. The
ingestion batches (pipeline/ingestion/tasks.py) and every other task (`SettlingRequest`,
pipeline/celery_tasks.py) settle through it, for any error, not only a lost connection. The
refresher skips recorded tags, so kombu restores the message after the visibility timeout and it
runs again: dedup drops what an ingestion batch stored already, and every task is safe to run
twice (ACK_LATE).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import structlog

logger = structlog.get_logger(__name__)

_lock = threading.Lock()  # the consumer's thread records, the refresher's thread reads
_given_up: set[str] = set()


def give_up(tag: str) -> None:
    """This worker no longer handles the message `tag`, though its channel still holds it."""
    with _lock:
        _given_up.add(tag)


def still_held(tags: Iterable[str]) -> list[str]:
    """Of the tags a channel holds, those this worker still handles. Forgets recorded tags the
    channel no longer holds (settled after all, or the channel is gone)."""
    tags = list(tags)
    with _lock:
        _given_up.intersection_update(tags)
        return [tag for tag in tags if tag not in _given_up]


class SettleLog:
    """What kombu's `ack_log_error` / `reject_log_error` log a failure to."""

    def critical(self, message: str, tag, exc, *args, **kwargs) -> None:  # kombu's arguments
        give_up(str(tag))
        logger.error(
            "could not settle a message; the broker delivers it again after the visibility timeout",
            delivery_tag=str(tag),
            attempt=message.split(" ", 2)[1].rstrip(","),  # "ack" or "reject"
            error=repr(exc),
        )


SETTLE_LOG = SettleLog()
# What kombu's ack_log_error / reject_log_error catch and report to SETTLE_LOG: any error.
SETTLE_ERRORS = (Exception,)
