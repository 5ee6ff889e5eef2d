"""The Celery app: queues, serialisation, worker roles and the periodic schedule, in one place.

Run a worker with `celery -A bklog_app worker --role ingestion` (or BKLOG_WORKER_ROLE); beat
with `celery -A bklog_app beat`.
"""

import os

import click
import structlog
from celery import Celery, bootsteps, signals
from kombu import Queue as KombuQueue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bklog_app.settings")

from django.conf import settings

from pipeline.queues import Queue, queues_for_role

# Every module that defines tasks. Listed here, not discovered, so a reader sees them all.
TASK_MODULES = [
    "pipeline.ingestion.tasks",
]

app = Celery("bklog", include=TASK_MODULES)


def _config() -> dict:
    return {
        "broker_url": settings.CELERY_BROKER_URL,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT,
            # How often a worker looks for messages whose consumer died (past the visibility
            # timeout) and puts them back: every CELERY_UNACKED_RESTORE_INTERVAL seconds.
            "unacked_restore_interval": settings.CELERY_UNACKED_RESTORE_INTERVAL,
            "unacked_restore_throttle": 1,
            "socket_timeout": 5,
            "socket_connect_timeout": 3,
            "retry_on_timeout": True,
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
        "beat_schedule": periodic_schedule(),
        "timezone": "UTC",
        "enable_utc": True,
    }


def periodic_schedule() -> dict:
    """Every periodic task, each with an expiry so a backlog never runs stale copies."""
    return {}


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


@signals.task_prerun.connect
def _bind_task_context(task_id=None, task=None, **_):
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))


@signals.worker_process_init.connect
def _fresh_connections_in_child(**_):
    """A forked pool process must not share the parent's sockets."""
    from django.db import connections

    from pipeline.storage import clickhouse

    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()
    clickhouse.reset()
