"""The ingestion consumer's backlog: the messages it holds until a pool process is free, and how
a batch is cut from them.

Group commit (tasks.py, `AckWhenStored`) hands a batch to the pool only when a process is free.
A batch handed to a busy pool waits in the pool's queue already cut, so at the end of a burst
one process could run the last full batch alone while the others had nothing left: the bench's
batch scenario ended that way, its last 5,000 events on one process for 0.33 s of its 1.7 s.
Held here instead, messages are cut when a process can take them, and a cut takes no more than
the backlog's share per pool process. This is guided self-scheduling (Polychronopoulos and Kuck,
1987: each chunk is the remaining work divided by the processes), so the processes finish a
burst within about one message of each other, while a long backlog still goes in full batches.

A backlog under `min_share` events (a tenth of a full batch) is not split: below that, a
batch's fixed round trips (docs/performance.md, "Where the time goes") cost more than running
the halves side by side saves, and the single-event traffic of a quiet stack keeps one batch per
linger as before.
"""

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    messages: int  # INGESTION_BATCH_MESSAGES
    events: int  # INGESTION_BATCH_EVENTS

    @property
    def min_share(self) -> int:
        return max(self.events // 10, 1)


class Backlog(Generic[T]):
    """Messages in arrival order, each with the number of events it holds."""

    def __init__(self, limits: BatchLimits) -> None:
        self.limits = limits
        self.events = 0
        self._items: deque[tuple[T, int]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, events: int) -> None:
        self._items.append((item, events))
        self.events += events

    def full(self) -> bool:
        """Holds a whole batch: INGESTION_BATCH_MESSAGES messages or INGESTION_BATCH_EVENTS events."""
        return len(self._items) >= self.limits.messages or self.events >= self.limits.events

    def share(self, processes: int) -> int:
        """The most events a batch cut now should take, with `processes` pool processes."""
        per_process = -(-self.events // max(processes, 1))
        return min(self.limits.events, max(per_process, self.limits.min_share))

    def take(self, share: int) -> list[T]:
        """The backlog's head: whole messages, at most INGESTION_BATCH_MESSAGES, up to the first
        that brings the batch to `share` events (so a batch passes it by less than a message)."""
        taken: list[T] = []
        events = 0
        items = self._items
        while items and len(taken) < self.limits.messages and events < share:
            item, count = items.popleft()
            taken.append(item)
            events += count
        self.events -= events
        return taken
