"""Capture requests of one web process, gathered for a few milliseconds into one message.

Every message costs the ingestion worker about 2 ms of CPU whatever it holds (kombu takes it
with one BRPOP, records and acknowledges it with two more round trips, Celery builds a request
for it): at 1,000 single-event requests a second that alone is one of the two cores. So capture
does what a database does with commits (group commit) and a Kafka producer with `linger.ms`:
the first request to arrive opens a message and waits up to CAPTURE_LINGER_MS for others (or
until CAPTURE_COALESCE_EVENTS events are in it), then publishes them all in one Redis round trip
and wakes them. Each request is answered only after that publish, so a 200 still means "in
Redis": the delivery promise is unchanged, a request just waits for its neighbours.

The message carries one `CapturedRequest` per request (pipeline/ingestion/message.py).

A request guarded by the project-epoch check (pipeline/ingestion/publish.py) only joins a
message with the same guard, and if the guard no longer holds, every request of the message
gets GuardChanged and decides again, as it would alone. With CAPTURE_LINGER_MS = 0 a request
publishes at once, joined only by requests that arrived while it took the lock.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.ingestion.message import CapturedRequest

__all__ = ["Coalescer", "Guard", "PublishParts"]

Guard = tuple[str, bytes | None] | None
PublishParts = Callable[[list[CapturedRequest], Guard], object]


@dataclass(eq=False)
class _Message:
    parts: list[CapturedRequest] = field(default_factory=list)
    events: int = 0
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Coalescer:
    """Thread-safe; one per process (gunicorn's gthread worker runs requests on threads)."""

    def __init__(self, publish: PublishParts, *, linger_seconds: float, max_events: int) -> None:
        self._publish = publish
        self._linger = linger_seconds
        self._max_events = max_events
        self._lock = threading.Lock()
        self._open: dict[Guard, _Message] = {}

    def submit(self, part: CapturedRequest, guard: Guard = None) -> None:
        """Return once the message holding `part` is published; raise what publishing raised."""
        with self._lock:
            message = self._open.get(guard)
            leader = message is None
            if leader:
                message = self._open[guard] = _Message()
            message.parts.append(part)
            message.events += len(part.get("events") or ())
            if message.events >= self._max_events:
                self._close(guard, message)
        if leader:
            self._lead(message, guard)
        else:
            message.done.wait()
        if message.error is not None:
            raise message.error

    def _close(self, guard: Guard, message: _Message) -> None:
        """Under the lock: no request joins `message` from now on."""
        if self._open.get(guard) is message:
            del self._open[guard]
        message.full.set()

    def _lead(self, message: _Message, guard: Guard) -> None:
        if self._linger > 0:
            message.full.wait(self._linger)
        with self._lock:
            self._close(guard, message)
        try:
            self._publish(message.parts, guard)
        except BaseException as exc:
            message.error = exc
        finally:
            message.done.set()
