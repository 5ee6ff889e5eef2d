"""The Celery app: queues, serialisation, worker roles and the periodic schedule, in one place.

Run a worker with `celery -A bklog_app worker --role ingestion` (or BKLOG_WORKER_ROLE); beat
with `celery -A bklog_app beat`.
"""

import gc
import os

import click
import orjson
import structlog
from celery import Celery, bootsteps, signals
from kombu import Queue as KombuQueue
from kombu import serialization
from kombu.utils import json as kombu_json

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bklog_app.settings")

from django.conf import settings
from django.db import connections

from bklog_app.unacked_refresh import UnackedRefresh
from pipeline.broker import transport_for
from pipeline.celery_tasks import settle_database_connections
from pipeline.exports.beat import export_beat_entries
from pipeline.ingestion.beat import ingestion_beat_entries
from pipeline.metrics import mark_process_dead, start_worker_metrics_server
from pipeline.plugins.beat import plugin_beat_entries
from pipeline.queues import Queue, queues_for_role
from pipeline.storage import clickhouse

# Every module that defines tasks. Listed here, not discovered, so a reader sees them all.
TASK_MODULES = [
    "pipeline.ingestion.tasks",
    "pipeline.plugins.tasks",
    "pipeline.exports.tasks",
    "pipeline.privacy.tasks",
]
# Bench only: the naive one-task-per-event baseline (bench/naive_tasks.py), registered only in
# the workers that `python -m bench` starts (it sets BKLOG_BENCH_TASKS=1). Never in production.
if os.environ.get("BKLOG_BENCH_TASKS") == "1":
    TASK_MODULES.append("bench.naive_tasks")

app = Celery("bklog", include=TASK_MODULES)

UNACKED_MUTEX_EXPIRE_SECONDS = 10


def _json_loads(data: bytes | str | memoryview | bytearray):
    """kombu's JSON decoder, with orjson doing the work where it can: kombu's calls a Python hook
    for every object, most of an ingestion consumer's time on batch requests. A body carrying
    kombu's typed values ({"__type__": ..., "__value__": ...}) still goes through kombu's, so
    whatever Celery encodes decodes as before."""
    raw = data.tobytes() if isinstance(data, memoryview) else data
    if (b'"__type__"' if isinstance(raw, bytes | bytearray) else '"__type__"') in raw:
        return kombu_json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # what orjson refuses and json takes: NaN, Infinity
        return kombu_json.loads(raw)


# Same name and content type as kombu's own "json" codec: messages stay readable by any Celery.
serialization.register("json", kombu_json.dumps, _json_loads, content_type="application/json", content_encoding="utf-8")


def _config() -> dict:
    return {
        "broker_url": settings.CELERY_BROKER_URL,
        # kombu's Redis transport with cheaper acknowledgements (pipeline/broker.py says how).
        "broker_transport": transport_for(settings.CELERY_BROKER_URL),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Workers score the messages they hold afresh (bklog_app/unacked_refresh.py), so
            # only a dead worker's grow older than this and are put back on their queue.
            "visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT,
            # How often a worker looks for messages whose consumer died (past the visibility
            # timeout) and puts them back: every CELERY_UNACKED_RESTORE_INTERVAL seconds.
            "unacked_restore_interval": settings.CELERY_UNACKED_RESTORE_INTERVAL,
            "unacked_restore_throttle": 1,
            # The lock a restore (and a refresh) holds: a worker killed holding it must not
            # stop every restore for kombu's default 5 minutes.
            "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE_SECONDS,
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
            "retry_on_timeout": True,
            # With a `sentinel://` broker URL: the master the Sentinels watch (kombu asks them
            # where it is on every new connection, so workers follow a failover).
            "master_name": settings.REDIS_SENTINEL_MASTER,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        "task_queues": [KombuQueue(queue.value, routing_key=queue.value) for queue in Queue],
        "task_default_queue": Queue.DEFAULT.value,
        "task_create_missing_queues": False,
        "task_track_started": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_max_tasks_per_child": 10_000,
        "worker_prefetch_multiplier": 4,
        "worker_send_task_events": False,
        # Celery's Django fixup closes every database connection before and after every task
        # unless this is set, and then every 2 x this many tasks: a new PostgreSQL backend for
        # each ingestion batch, several a second, which cost the worker and PostgreSQL more CPU
        # than the batch's persons queries. Connections are kept the way Django keeps them
        # between requests instead (`_settle_database_connections`).
        "CELERY_DB_REUSE_MAX": 1_000_000,
        "beat_schedule": periodic_schedule(),
        "beat_scheduler": "bklog_app.beat_leader:LeaderScheduler",
        "timezone": "UTC",
        "enable_utc": True,
    }


def periodic_schedule() -> dict:
    """Every periodic task, each with an expiry so a backlog never runs stale copies."""
    return {**plugin_beat_entries(), **export_beat_entries(), **ingestion_beat_entries()}


app.config_from_object(_config())


# --- Worker roles ------------------------------------------------------------------------

app.user_options["worker"].add(
    click.Option(
        ("--role",),
        default=None,
        help="Queues to consume: all, ingestion, async (default + async_export), scheduler, "
        "or one queue name. Defaults to BKLOG_WORKER_ROLE.",
    )
)


class WorkerRole(bootsteps.Step):
    """Selects the role's queues before the consumer starts, and sizes prefetch for batching."""

    def __init__(self, worker, role=None, **options):
        role = role or settings.BKLOG_WORKER_ROLE
        queues = queues_for_role(role)
        if not options.get("queues"):
            worker.app.amqp.queues.select([q.value for q in queues])
        if Queue.INGESTION in queues:
            # Ingestion gathers up to INGESTION_BATCH_MESSAGES messages per INSERT; the
            # worker must be allowed to hold that many unacknowledged.
            per_process = -(-settings.INGESTION_BATCH_MESSAGES * 2 // max(worker.concurrency or 1, 1))
            worker.prefetch_multiplier = max(worker.prefetch_multiplier, per_process)
        structlog.get_logger(__name__).info("worker role", role=role, queues=[q.value for q in queues])
        super().__init__(worker, **options)


app.steps["worker"].add(WorkerRole)
app.steps["consumer"].add(UnackedRefresh)


@signals.task_prerun.connect
def _bind_task_context(task_id=None, task=None, **_):
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))


@signals.task_prerun.connect
@signals.task_postrun.connect
def _settle_database_connections(task=None, **_):
    if task is not None and not getattr(task.request, "is_eager", False):
        settle_database_connections()


POOL_GC_YOUNGEST_THRESHOLD = 50_000


@signals.worker_process_init.connect
def _freeze_startup_objects(**_):
    """A pool process's full garbage collections walk every object it holds, Django's and the
    plugins' included: an ingestion batch allocates tens of thousands of dicts, so they ran often
    and cost about a sixth of the batch's CPU on the bench (0.24 -> 0.20 ms per event frozen).
    What exists when the process starts lives as long as the process: leave it out of them.

    The youngest generation is collected every POOL_GC_YOUNGEST_THRESHOLD container objects
    allocated (and not yet freed) instead of every 700: a 5,000-event batch keeps about 75,000 of
    them alive until it ends, so Python's default made about 110 young collections, 10 middle
    ones and a full one per batch, each walking what the batch holds; now it makes about one.
    Only garbage in reference cycles, which this code rarely makes, waits longer to be freed. The
    ingestion batch itself runs with collection paused (pipeline/ingestion/tasks.py `gc_paused`)."""
    gc.freeze()
    _youngest, middle, oldest = gc.get_threshold()
    gc.set_threshold(POOL_GC_YOUNGEST_THRESHOLD, middle, oldest)
    structlog.get_logger(__name__).info(
        "pool process started", frozen_objects=gc.get_freeze_count(), gc_threshold=gc.get_threshold()
    )


@signals.worker_process_init.connect
def _fresh_connections_in_child(**_):
    """A forked pool process must not share the parent's sockets."""
    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()
    clickhouse.reset()


# --- Operations: metrics and log format (docs/operations.md) -------------------------------


@signals.worker_ready.connect
def _serve_worker_metrics(**_):
    """Workers without a web process beside them serve their own samples (BKLOG_WORKER_METRICS_PORT)."""
    if settings.BKLOG_WORKER_METRICS_PORT:
        start_worker_metrics_server(settings.BKLOG_WORKER_METRICS_PORT)


@signals.worker_process_shutdown.connect
def _forget_pool_process_metrics(pid=None, **_):
    mark_process_dead(pid or os.getpid())


@signals.celeryd_init.connect
def _no_banner_in_json_logs(instance=None, **_):
    """The start-up banner is plain text: with LOG_FORMAT=json every line must be JSON."""
    if settings.LOG_FORMAT == "json" and instance is not None:
        instance.quiet = True
