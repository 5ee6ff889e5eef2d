"""A worker keeps the messages it holds from being handed out again, so a dead worker's come back
within a minute.

kombu's Redis transport emulates acknowledgements: a delivered message is kept in the `unacked`
hash, its delivery tag scored with the delivery time in the `unacked_index` sorted set, and every
worker now and then puts back on its queue the messages scored older than the visibility timeout
(`QoS.restore_visible`). That is how a SIGKILLed worker's messages come back. But kombu never
scores a message again while its worker holds it, so the timeout had to outlast the longest hold
(a batch waiting out an outage, a countdown retry, a long task), and a dead worker's messages
came back that late: 15 minutes.

Here the worker's main process, the one whose consumer holds the messages (tasks run in pool
children, which hold none), scores every delivery tag it holds with "now" again every third of
the visibility timeout. A live worker's messages never look older than that, however long it
holds them (ingestion batches buffered by celery-batches, ETA'd retries: all unacknowledged in
the consumer's QoS), so the timeout can be short (CELERY_VISIBILITY_TIMEOUT) and a dead worker's
messages come back within it plus one restore interval (CELERY_UNACKED_RESTORE_INTERVAL).

- A thread of its own, not the consumer's event loop: a worker whose loop is busy or blocked (a
  long flush, a broker read that hangs) still keeps its messages fresh; Python hands the thread
  the GIL every few milliseconds whatever the loop does.
- Its own Redis connection, not the channel's: kombu's asynchronous connections belong to the
  event loop's poller.
- `ZADD XX`: a tag already acknowledged or restored is not brought back into the index.
- Under kombu's `unacked_mutex`, which `restore_visible` holds while it picks and restores: no
  restore runs between reading the held tags and scoring them. A restore that had already picked
  one of them finishes first; that tag was late anyway. A mutex held past a short wait (a
  restorer killed holding it, until it expires) does not stop the refresh.
- Redis down or slow: logged, and tried again at the next beat.

A worker that is alive but wedged keeps its messages until it is restarted: a live process's
messages are its own. Except the ones it tried to settle and could not (an acknowledgement or a
requeue that failed while the consumer's connection survived): kombu's channel still holds
them, but the worker is done with them, so they are left to grow old and be restored
(pipeline/unsettled.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
import structlog
from celery import bootsteps

from pipeline import unsettled
from pipeline.redis import connect

logger = structlog.get_logger(__name__)

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError)
MUTEX_WAIT_SECONDS = 2.0


def held_tags(qos: Any) -> list[str]:
    """The delivery tags a kombu QoS holds unacknowledged. Its dicts belong to the consumer's
    thread; a copy taken while it changes them is simply taken again."""
    for _ in range(5):
        try:
            dirty = set(qos._dirty)
            return [tag for tag in list(qos._delivered) if tag not in dirty]
        except RuntimeError:  # changed size during iteration
            continue
    return []


class UnackedRefresher:
    """Scores the tags `qos_source()` holds with the current time in `index_key`, every
    `interval` seconds, on a daemon thread."""

    def __init__(
        self,
        qos_source: Callable[[], Any],
        client: redis.Redis,
        *,
        interval: float,
        index_key: str = "unacked_index",
        mutex_key: str = "unacked_mutex",
        mutex_expire: float = 10,
    ) -> None:
        self.qos_source = qos_source
        self.client = client
        self.interval = interval
        self.index_key = index_key
        self.mutex_key = mutex_key
        self.mutex_expire = mutex_expire
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> int:
        """Score the held tags once; returns how many were still in the index. Raises Redis's errors."""
        qos = self.qos_source()
        tags = unsettled.still_held(held_tags(qos)) if qos is not None else []
        if not tags:
            return 0
        lock = self.client.lock(self.mutex_key, timeout=self.mutex_expire, blocking_timeout=MUTEX_WAIT_SECONDS)
        locked = lock.acquire()
        try:
            return self._score(tags)
        finally:
            if locked:
                with contextlib.suppress(redis.exceptions.LockError):  # expired meanwhile
                    lock.release()

    def _score(self, tags: Iterable[str]) -> int:
        now = time.time()
        # CH counts the members changed, not added: with XX, the tags still in the index.
        return int(self.client.zadd(self.index_key, dict.fromkeys(tags, now), xx=True, ch=True))

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                refreshed = self.refresh()
            except REDIS_ERRORS as exc:
                logger.warning("could not refresh the unacknowledged messages this worker holds", error=str(exc))
            except Exception:
                logger.exception("unacknowledged messages refresh failed")
            else:
                logger.debug("unacknowledged messages refreshed", messages=refreshed)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="unacked-refresh", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + MUTEX_WAIT_SECONDS + 10)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _redis_qos(consumer) -> Any:
    """The QoS of the channel the worker's task consumer reads, when the broker is Redis."""
    task_consumer = getattr(consumer, "task_consumer", None)
    channel = getattr(task_consumer, "channel", None)
    if channel is None or not hasattr(channel, "unacked_index_key"):
        return None
    return channel.qos


class UnackedRefresh(bootsteps.StartStopStep):
    """The refresher as a step of the worker's consumer: started once the task consumer is, kept
    across consumer restarts (it always reads the current consumer's channel), stopped at
    shutdown."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer, **kwargs) -> None:
        self.refresher: UnackedRefresher | None = None
        super().__init__(consumer, **kwargs)

    def start(self, consumer) -> None:
        if self.refresher is not None or not consumer.app.conf.broker_url.startswith(
            ("redis://", "rediss://", "sentinel://")
        ):
            return
        options = consumer.app.conf.broker_transport_options
        channel = getattr(consumer.task_consumer, "channel", None)
        prefix = getattr(channel, "global_keyprefix", "") or ""
        client = connect(consumer.app.conf.broker_url)
        self.refresher = UnackedRefresher(
            lambda: _redis_qos(consumer),
            client,
            interval=refresh_interval(options["visibility_timeout"]),
            index_key=prefix + getattr(channel, "unacked_index_key", "unacked_index"),
            mutex_key=prefix + getattr(channel, "unacked_mutex_key", "unacked_mutex"),
            mutex_expire=options.get("unacked_mutex_expire", 300),
        )
        self.refresher.start()
        logger.info("refreshing unacknowledged messages", every_seconds=self.refresher.interval)

    def shutdown(self, consumer) -> None:
        if self.refresher is not None:
            self.refresher.stop()
            self.refresher = None


def refresh_interval(visibility_timeout: float) -> float:
    """A third of the timeout: a tag is scored twice before it could look abandoned."""
    return max(visibility_timeout / 3, 1.0)
