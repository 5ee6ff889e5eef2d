"""The ingestion task: captured requests, gathered into batches, through `ingest_messages`.

Built on celery-batches: the worker gathers up to INGESTION_BATCH_MESSAGES messages or
INGESTION_BATCH_EVENTS events and runs them together, so ClickHouse gets one INSERT per batch.
Group commit: what arrives waits in the consumer's backlog (backlog.py) until a pool process is
free; a free process gets a whole batch at once, or whatever came once the first message has
waited INGESTION_BATCH_LINGER_SECONDS, and the end of a burst is shared out between processes.

Acknowledgement is our own, not celery-batches': a message is acked only once every event in it
is stored, a duplicate, or in the dead-letter store. While a dependency is down the batch waits
and retries with backoff; past INGESTION_RETRY_MAX_SECONDS its messages go back to the queue.
If the worker dies, unacked messages come back after the broker's visibility timeout; a message
lost between the queue and the unacked set comes back through the capture journal
(pipeline/ingestion/journal.py), which capture writes (enqueue.py), batches keep up to date and
`sweep_journal` reads.

Isolation between projects (pipeline/ingestion/isolation.py): a batch first moves the requests of
projects in overflow that came on the `ingestion` queue to `ingestion_overflow` (published there,
journaled, before their message is acknowledged: a crash in between runs them twice at worst,
and dedup stores them once), then records what each project's plugin chain cost.

The worker's half of ingestion: capture publishes through pipeline/ingestion/enqueue.py, which
does not import this module (nor celery-batches) into the web process.
"""

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task
from django.conf import settings

from pipeline import locks
from pipeline.celery_tasks import ACK_LATE, UPKEEP_RETRY, settle_database_connections, task
from pipeline.errors import is_outage
from pipeline.ingestion import isolation, journal, projects, publish
from pipeline.ingestion.backlog import Backlog, BatchLimits
from pipeline.ingestion.batch import dead_letter_messages, ingest_messages, set_aside
from pipeline.ingestion.enqueue import publish_journaled, republish
from pipeline.ingestion.message import INGEST_QUEUES, OVERFLOW_QUEUE, ReceivedRequest, from_wire, to_wire
from pipeline.ingestion.packed import PackedRequest, pack
from pipeline.ingestion.timestamps import parse_iso
from pipeline.metrics import (
    CAPTURE_MESSAGES_REPUBLISHED,
    observe_batch_dead_lettered,
    observe_ingestion,
    observe_ingestion_requeued,
    observe_isolation_move,
    observe_set_aside,
)
from pipeline.queues import TaskName
from pipeline.redis import REDIS_ERRORS
from pipeline.unsettled import SETTLE_ERRORS, SETTLE_LOG

logger = structlog.get_logger(__name__)

SWEEP_TIME_LIMIT = 300


class AckWhenStored(Batches):
    """Batches that acknowledge on success and requeue on failure, instead of acking always, that
    cut a batch at `flush_events` events as well as at `flush_every` messages (single-event
    requests make many small messages: the more per INSERT, the less ClickHouse works per event;
    batch requests few large ones: a bound on events bounds the INSERT and memory), and that
    leave each message's body undecoded until its batch runs in a pool process (packed.py says
    why: the prefetched messages, decoded, were most of the main process's memory).

    Group commit: messages wait in the consumer's backlog (backlog.py) until a pool process is
    free, and a batch is cut only for a free process. A free process gets a batch once the
    backlog holds a whole one, or once its first message has waited `flush_linger`; when a batch
    returns, whatever has lingered goes at once. A backlog cut for a burst's end is shared out
    between the processes (backlog.py says how), so none is left idle while another runs the
    rest. `flush_interval` repeats the hand-over while messages wait, a bound on the wait should
    a linger timer be lost. The count of batches in flight changes in the consumer's main thread
    only: the hand-over runs there (from a message, a timer or a returning batch), and the
    prefork pool (Celery's AsynPool) reads its processes' results in the consumer's event loop,
    calling `on_return` or `on_error` there; billiard calls one of them for every batch, also for
    a process that died or hit a time limit."""

    flush_events = 5_000
    flush_linger = 0.05
    _in_flight = 0  # batches handed to the pool, not yet returned
    _lingered = False  # the backlog's first message has waited flush_linger
    _linger_tref = None

    def __init__(self) -> None:
        super().__init__()
        self._backlog: Backlog[Buffered] = Backlog(BatchLimits(self.flush_every, self.flush_events))

    def Strategy(self, task, app, consumer):
        """Called each time the consumer (re)starts, e.g. after the broker connection was lost.

        On a lost connection Celery clears the event loop's timer, and with it the repeating
        hand-over; its handle `_tref` stays set, so no new timer would start and the backlog would
        go only when it filled: a quiet queue stalls. The group commit's linger timer goes the
        same way. Forget the dead handles, and re-arm both timers at once for messages already in
        the backlog (they are kept: settling them on the new connection works, and if it does not,
        the broker delivers them again after the visibility timeout and dedup drops the copy).
        """
        self._pool = consumer.pool
        for tref in (self._tref, self._linger_tref):
            if tref is not None:
                tref.cancel()
        self._tref = self._linger_tref = None
        self._lingered = False
        if self._backlog:
            logger.warning("consumer restarted with buffered messages; flushing them", messages=len(self._backlog))
            self._tref = consumer.timer.call_repeatedly(self.flush_interval, self._do_flush)
            self._linger_tref = consumer.timer.call_after(self.flush_linger, self._on_linger)

        def on_message(message, body, ack, reject, callbacks, **kwargs) -> None:
            packed, events = pack(message)
            self._backlog.add(Buffered(packed, message, ack, reject), events)
            if self._tref is None:  # the first message starts the repeating hand-over
                self._tref = consumer.timer.call_repeatedly(self.flush_interval, self._do_flush)
            if self._linger_tref is None and not self._lingered:  # ...and its linger
                self._linger_tref = consumer.timer.call_after(self.flush_linger, self._on_linger)
            if self._backlog.full():
                self._hand_over()

        return on_message

    def _do_flush(self) -> None:
        """The repeating timer's hand-over (celery-batches' name for it)."""
        self._hand_over()

    def _hand_over(self) -> None:
        """Cut a batch for each free pool process while messages wait, each no larger than the
        backlog's share per process as it stood when the hand-over began."""
        backlog = self._backlog
        share = backlog.share(self._pool.num_processes)
        while backlog and self._pool_has_room():
            self.flush(backlog.take(share))
        if backlog:
            return  # the rest goes when a batch returns
        self._lingered = False
        for tref in (self._linger_tref, self._tref):
            if tref is not None:
                tref.cancel()
        self._linger_tref = self._tref = None

    def _pool_has_room(self) -> bool:
        return self._in_flight < self._pool.num_processes

    def _on_linger(self) -> None:
        self._linger_tref = None
        self._lingered = True
        self._hand_over()

    def _on_batch_returned(self) -> None:
        self._in_flight -= 1
        if self._lingered or self._backlog.full():
            self._hand_over()

    def flush(self, requests: list["Buffered"]):
        packed = ([request.packed for request in requests],)

        def settle(ack: bool) -> None:
            for request in acknowledge_in_bulk(requests) if ack else requests:
                try:
                    if ack:
                        request.acknowledge()
                    else:
                        request.reject(requeue=True)
                except Exception as exc:  # the connection this message came on is gone
                    logger.warning(
                        "could not settle a message; the broker delivers it again after the visibility timeout",
                        message_id=request.id,
                        error=repr(exc),
                    )

        def on_return(stored: bool | None) -> None:
            settle(bool(stored))
            self._on_batch_returned()

        def on_error(exc) -> None:
            logger.error("ingestion batch did not run in the pool; messages requeued", error=repr(exc))
            settle(False)
            self._on_batch_returned()

        self._in_flight += 1
        try:
            return self._pool.apply_async(
                apply_batches_task,
                (self, packed, 0, None),
                callback=on_return,
                error_callback=on_error,
            )
        except BaseException:  # the buffer no longer holds them: back to the queue
            self._in_flight -= 1
            settle(False)
            raise


class Buffered:
    """A message in the consumer's buffer: what celery-batches' flush reads of Celery's request
    (`eta`), and the acknowledgement and requeue Celery's request would make. Any failure to
    settle, not only a lost connection, is logged to SETTLE_LOG (pipeline/unsettled.py says why)."""

    __slots__ = ("_ack", "_reject", "message", "packed", "settled")
    eta = None  # capture sets no ETA: every buffered message is ready

    def __init__(self, packed: PackedRequest, message, ack, reject) -> None:
        self.packed = packed
        self.message = message  # kombu's
        self._ack = ack
        self._reject = reject
        self.settled = False

    @property
    def id(self) -> str:
        return self.packed.id

    def acknowledge(self) -> None:
        if not self.settled:
            self.settled = True
            self._ack(SETTLE_LOG, SETTLE_ERRORS)

    def reject(self, requeue: bool = False) -> None:
        if not self.settled:
            self.settled = True
            self._reject(SETTLE_LOG, SETTLE_ERRORS, requeue)


def acknowledge_in_bulk(requests: list[Buffered]) -> list[Buffered]:
    """Acknowledge the requests' messages in one round trip per channel, where the transport can
    (pipeline/broker.py `QoS.ack_many`). Returns those left to acknowledge one by one (another
    transport). A failed round trip is reported as kombu reports a failed `ack`, for each of its
    messages: the broker delivers them again after the visibility timeout.

    This goes past Celery's acknowledgement promise, which adds only a restore of the prefetch
    count after a reconnect, counted in Celery's active requests: buffered messages are never
    among them, so that restore has nothing to wait for here."""
    by_channel: dict[object, list[Buffered]] = {}
    for request in requests:
        if not request.settled:
            by_channel.setdefault(getattr(request.message, "channel", None), []).append(request)
    left = []
    for channel, group in by_channel.items():
        if channel is None or not hasattr(channel.qos, "ack_many"):
            left += group
            continue
        for request in group:
            request.settled = True
        try:
            channel.qos.ack_many([request.message.delivery_tag for request in group])
        except Exception as exc:
            for request in group:
                SETTLE_LOG.critical("Couldn't ack %r, reason:%r", request.message.delivery_tag, exc)
    return left


# Retries are the batch's own (an outage is retried in place, then the messages requeued), and
# no time limit: SoftTimeLimitExceeded inside a batch would read as bad data and dead-letter it.
@task(
    TaskName.INGEST_BATCH,
    retry={},
    base=AckWhenStored,
    flush_every=settings.INGESTION_BATCH_MESSAGES,
    flush_events=settings.INGESTION_BATCH_EVENTS,
    flush_interval=settings.INGESTION_BATCH_SECONDS,
    flush_linger=settings.INGESTION_BATCH_LINGER_SECONDS,
    **ACK_LATE,
)
def ingest_batch(requests: list[PackedRequest | SimpleRequest]) -> bool:
    """Return True when every message is durably handled (stored, duplicate or dead-lettered)."""
    with gc_paused():  # from decoding the messages on: the batch holds all it builds until it ends
        return _ingest_requests(requests)


def _ingest_requests(requests: list[PackedRequest | SimpleRequest]) -> bool:
    messages = _decoded(requests)
    message_ids = [request.id for request in requests]
    _journal(journal.touch, _aging(requests, messages))
    messages = _move_overflow(requests, messages)
    started = time.monotonic()
    deadline = started + settings.INGESTION_RETRY_MAX_SECONDS
    delay = 0.5
    while True:
        try:
            report = ingest_messages(messages)
        except Exception as exc:
            if not is_outage(exc):
                # Not bad data (that is dead-lettered per event) but a failure of the batch
                # itself: keep every event in the dead-letter store rather than loop on it.
                logger.exception("ingestion batch failed; its events go to the dead-letter store")
                try:
                    dead_letter_messages(messages, exc)
                except Exception:
                    logger.exception("could not dead-letter the batch; messages requeued")
                    return False
                observe_batch_dead_lettered(messages, time.monotonic() - started)
                _journal(journal.forget, message_ids)
                return True
            if time.monotonic() + delay > deadline:
                logger.error(
                    "dependency still down; messages requeued",
                    error=str(exc),
                    messages=len(messages),
                )
                observe_ingestion_requeued(time.monotonic() - started)
                # Back in the queue: the sweep would find it there, this spares it the look.
                _journal(journal.touch, message_ids)
                return False
            logger.warning("dependency down, retrying ingestion batch", error=str(exc), retry_in=delay)
            settle_database_connections()  # a connection the outage broke is replaced
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        _record_chain_costs(report)
        observe_ingestion(report, time.monotonic() - started)
        logger.info(
            "ingested batch",
            messages=len(messages),
            received=report.received,
            stored=report.stored,
            duplicates=report.duplicates,
            dropped=report.dropped,
            dead_lettered=report.dead_lettered,
            seconds=round(time.monotonic() - started, 3),
        )
        _journal(journal.forget, message_ids)
        return True


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch runs. A batch keeps what it builds (the decoded
    messages, the events, their persons, the rows) alive until it ends, so a young collection
    during it walks all of that, finds nothing to free and moves it to an older generation: with
    the pool's threshold (bklog_app/celery.py, POOL_GC_YOUNGEST_THRESHOLD) a 5,000-event batch made
    one, about 25 ms, a tenth of its CPU. Paused, the batch frees what it built by reference
    counting when it ends, and the count of young objects falls back with it; the little garbage
    in reference cycles a batch may leave (a plugin's exception and its frames) waits for the next
    collection, which runs between batches on a young generation that is nearly empty."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _decoded(requests: list[PackedRequest | SimpleRequest]) -> list[ReceivedRequest]:
    """The requests of every message. A body that cannot be decoded is logged and acknowledged
    with the batch, as Celery does with an undecodable message: no retry would read it."""
    messages = []
    for request in requests:
        try:
            messages.extend(from_wire(request.kwargs, request.id))
        except Exception as exc:
            logger.error(
                "undecodable ingestion message dropped: capture writes JSON, so look for what else publishes here",
                message_id=request.id,
                error=repr(exc),
            )
    return messages


def _aging(requests: list[PackedRequest | SimpleRequest], messages: list[ReceivedRequest]) -> list[str]:
    """The ids of the messages whose journal entries need a touch: those captured more than half
    the journal's grace period ago, or not known to be younger (undecodable, no `now`). A younger
    one's entry is not old enough for the sweeper to look at for another half of the grace
    period, and the batch mostly forgets it before then; if not, the sweeper finds it
    unacknowledged, as after a missed touch."""
    young_after = time.time() - settings.INGESTION_JOURNAL_GRACE_SECONDS / 2
    young, old = set(), set()
    for message in messages:
        captured = parse_iso(message.get("now"))
        (young if captured is not None and captured.timestamp() > young_after else old).add(message["id"])
    return [request.id for request in requests if request.id in old or request.id not in young]


def _move_overflow(requests: list[PackedRequest | SimpleRequest], messages: list[dict]) -> list[dict]:
    """The messages to run here; those of projects in overflow that came on the `ingestion` queue
    are published on `ingestion_overflow` instead. Anything wrong: they all run here."""
    if not isolation.is_enabled() or not publish.is_redis_broker():
        return messages
    on_main = {request.id for request in requests if _queue_of(request) != OVERFLOW_QUEUE}
    if not on_main:
        return messages
    try:
        keep, aside = set_aside(messages, on_main)
        if aside:
            parts = [{key: value for key, value in message.items() if key != "id"} for message in aside]
            publish_journaled(to_wire(parts), queue=OVERFLOW_QUEUE)
    except Exception as exc:
        logger.warning("could not move overflow projects' requests aside; running them here", error=repr(exc))
        return messages
    if aside:
        observe_set_aside(sum(len(message.get("events") or ()) for message in aside))
    return keep


def _queue_of(request: PackedRequest | SimpleRequest) -> str | None:
    return (request.delivery_info or {}).get("routing_key")


def _record_chain_costs(report) -> None:
    """Never fails a batch: a missed record only leaves a project's window short of one batch."""
    try:
        moves = isolation.record(report.chain_costs, projects.EPOCH_KEY)
    except REDIS_ERRORS as exc:
        logger.warning("could not record plugin chain costs", error=str(exc))
        return
    for move in moves:
        observe_isolation_move(move.state)
        logger.warning("project moved", project_id=move.project_id, ingestion_state=move.state, why=move.why)


def _journal(action, message_ids: list[str]) -> None:
    """Journal upkeep never fails a batch: a missed touch or forget only means the sweeper
    looks at the message once more (and finds it queued, unacknowledged or stored)."""
    if not publish.is_redis_broker():
        return
    try:
        action(message_ids)
    except REDIS_ERRORS as exc:
        logger.warning("could not update the capture journal", error=str(exc), messages=len(message_ids))


@task(TaskName.SWEEP_JOURNAL, retry=UPKEEP_RETRY, time_limit=SWEEP_TIME_LIMIT, ignore_result=True)
def sweep_journal() -> dict[str, int] | None:
    """Publish again any captured message that is neither queued nor being processed (see
    pipeline/ingestion/journal.py). Returns the sweep's counts."""
    if not publish.is_redis_broker():
        return None
    # One sweep at a time across the cluster: two could publish the same lost message twice.
    with locks.held("ingestion:journal-sweep", ttl=SWEEP_TIME_LIMIT) as acquired:
        if not acquired:
            return None
        counts = journal.sweep(INGEST_QUEUES, republish)
    CAPTURE_MESSAGES_REPUBLISHED.inc(counts["republished"])
    if counts["old"]:
        logger.info("capture journal swept", **counts)
    return counts
