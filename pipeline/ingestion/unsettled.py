"""Messages an ingestion worker could not settle, which its unacked refresher then lets go.

A batch's messages are acknowledged once it is stored, or requeued when it failed
(tasks.AckWhenStored). If the acknowledgement or the requeue itself fails (Redis timed out, or
was away for a moment while the consumer's own connection survived), kombu still counts the
message among those its channel holds, and the worker's refresher (bklog_app/unacked_refresh.py)
would score it afresh for as long as the worker lives. Nothing would then bring it back: kombu
restores only messages whose score grows old, and the capture journal counts an unacknowledged
message as being processed. After a failed requeue its events would never be stored.

`SettleLog` is the logger kombu reports such a failure to (`Message.ack_log_error` and
`reject_log_error` call `critical` with the delivery tag); it records the tag here. The refresher
skips recorded tags, so kombu restores the message after the visibility timeout and the next
batch stores it, or drops it as a duplicate when it was stored already.
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

    def critical(self, message: str, tag, exc, *args, **kwargs) -> None:
        give_up(str(tag))
        logger.error(
            "could not settle a message; the broker delivers it again after the visibility timeout",
            delivery_tag=str(tag),
            attempt=message.split(" ", 2)[1].rstrip(","),  # "ack" or "reject"
            error=repr(exc),
        )
