"""Prometheus metrics of every bklog process (docs/contracts.md#operations), in prometheus-client's multiprocess mode.

Every process of one process tree (a Gunicorn master and its workers; a Celery worker and its
pool children; everything under one supervisord) writes its samples to memory-mapped files in
PROMETHEUS_MULTIPROC_DIR, and whoever serves `/metrics` adds them up. The directory is set
before prometheus_client is imported (see `_ensure_multiproc_dir`), and emptied when a whole
tree starts (support-files/run-supervisord.sh, support-files/docker-entrypoint.sh).

Hot paths only increment counters and observe histograms (a few hundred nanoseconds each).
Values that live in Redis or the database (queue depth, the latest ingested event) are read when
Prometheus scrapes, by `ScrapeTimeCollector`, so no process has to keep them up to date.

Metric objects and the helpers below are the only API: `observe_plugin_call` is for the plugin
runtime, `observe_ingestion` for the ingestion task, `observe_clickhouse_insert` for storage.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import connection

from pipeline.ingestion import isolation
from pipeline.ingestion.status import LAST_INGESTED_KEY, LATEST_EVENT_TS_KEY
from pipeline.queues import Queue
from pipeline.redis import get_redis


def _ensure_multiproc_dir() -> str | None:
    """Make sure PROMETHEUS_MULTIPROC_DIR is set and exists before any metric is created.

    Normally bklog_app.settings has set it already (children inherit it). Without Django
    settings (a bare script) metrics stay in-process, which is what prometheus-client does then.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        try:
            path = str(settings.PROMETHEUS_MULTIPROC_DIR)
        except Exception:  # settings not configured: single-process mode
            return None
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    Path(path).mkdir(parents=True, exist_ok=True)
    # prometheus_client picks its value class when first imported; if something imported it
    # before the folder was known, pick again (metrics read it when they are created).
    from prometheus_client import values  # noqa: PLC0415 - only once the folder is known

    if values.ValueClass.__name__ == "MutexValue":
        values.ValueClass = values.get_value_class()
    return path


MULTIPROC_DIR = _ensure_multiproc_dir()

from prometheus_client import (  # noqa: E402 - must follow _ensure_multiproc_dir
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

# --- Web ---------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "bklog_http_requests_total",
    "HTTP requests answered, by Django view (URL name), method and status code.",
    ["view", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "bklog_http_request_duration_seconds",
    "Time to answer an HTTP request, by Django view (URL name).",
    ["view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
EVENTS_RECEIVED = Counter(
    "bklog_events_received_total",
    "Events accepted by the capture API and enqueued for ingestion.",
)
CAPTURE_MESSAGES = Counter(
    "bklog_capture_messages_total",
    "Ingestion messages published by the capture API; each holds one or more requests "
    "(pipeline/ingestion/coalesce.py), so requests / messages is the coalescing factor.",
)
CAPTURE_MESSAGES_REPUBLISHED = Counter(
    "bklog_capture_messages_republished_total",
    "Captured messages the journal sweep published again because they were neither queued nor "
    "being processed: lost between the queue and a worker (pipeline/ingestion/journal.py). Their "
    "events are stored late, not lost; a steady rate means workers or Redis keep dying.",
)

# --- Ingestion ---------------------------------------------------------------------------

EVENTS_INGESTED = Counter("bklog_events_ingested_total", "Events stored in ClickHouse.")
EVENTS_DUPLICATE = Counter(
    "bklog_events_duplicate_total", "Events not stored again because their uuid was already stored."
)
EVENTS_DROPPED = Counter(
    "bklog_events_dropped_total",
    "Events dropped on purpose: unknown project token, invalid uuid, or a plugin returned nothing.",
)
EVENTS_DEAD_LETTERED = Counter(
    "bklog_events_dead_lettered_total", "Events put in the dead-letter store because a step failed on them."
)
EVENTS_SUPPRESSED = Counter(
    "bklog_events_suppressed_total",
    "Events dropped before the plugin chain because their distinct id is suppressed (docs/privacy.md).",
)
INGESTION_BATCHES = Counter(
    "bklog_ingestion_batches_total",
    "Ingestion batches by outcome: done (each event stored, duplicate, dropped or dead-lettered), "
    "dead_lettered (the batch as a whole failed), requeued (a dependency stayed down).",
    ["outcome"],
)
INGESTION_BATCH_DURATION = Histogram(
    "bklog_ingestion_batch_duration_seconds",
    "Time to ingest one batch of captured requests, retries included.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
TRACKING_PLAN_VIOLATIONS = Counter(
    "bklog_tracking_plan_violations_total",
    "Events that broke their project's tracking plan (docs/governance.md), by plan mode (observe: "
    "stored anyway; enforce: dead-lettered, or stored with unknown properties stripped) and by rule "
    "keyword (type, required, enum, unplanned_event, unknown_property, ...).",
    ["mode", "keyword"],
)

# --- Storage -----------------------------------------------------------------------------

CLICKHOUSE_INSERT_ROWS = Counter("bklog_clickhouse_insert_rows_total", "Rows written to ClickHouse by INSERT.")
CLICKHOUSE_INSERT_DURATION = Histogram(
    "bklog_clickhouse_insert_duration_seconds",
    "Time of one ClickHouse INSERT (its count is the number of INSERTs).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# --- Plugins -----------------------------------------------------------------------------

PLUGIN_CALL_DURATION = Histogram(
    "bklog_plugin_call_duration_seconds",
    "Time of one plugin method call, by plugin config id and method.",
    ["plugin_config_id", "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PLUGIN_CALL_ERRORS = Counter(
    "bklog_plugin_call_errors_total",
    "Plugin method calls that raised or timed out, by plugin config id and method.",
    ["plugin_config_id", "method"],
)


INGESTION_ISOLATION_MOVES = Counter(
    "bklog_ingestion_isolation_moves_total",
    "Projects moved between ingestion states (pipeline/ingestion/isolation.py), by the state moved to.",
    ["state"],
)
INGESTION_SET_ASIDE_EVENTS = Counter(
    "bklog_ingestion_set_aside_events_total",
    "Events taken off the ingestion queue and moved to ingestion_overflow (their project is in overflow).",
)


def observe_isolation_move(state: str) -> None:
    INGESTION_ISOLATION_MOVES.labels(state).inc()


def observe_set_aside(events: int) -> None:
    INGESTION_SET_ASIDE_EVENTS.inc(events)


def observe_plugin_call(config_id: int | str, method: str, seconds: float, failed: bool) -> None:
    """Record one call of a plugin method (`process_event`, `on_event`, `export_events`, a job...)."""
    labels = (str(config_id), method)
    PLUGIN_CALL_DURATION.labels(*labels).observe(seconds)
    if failed:
        PLUGIN_CALL_ERRORS.labels(*labels).inc()


def observe_ingestion(report, seconds: float) -> None:
    """Record what one ingestion batch did; `report` is a pipeline.ingestion.batch.BatchReport."""
    EVENTS_INGESTED.inc(report.stored)
    EVENTS_DUPLICATE.inc(report.duplicates)
    EVENTS_DROPPED.inc(report.dropped)
    EVENTS_DEAD_LETTERED.inc(report.dead_lettered)
    INGESTION_BATCHES.labels("done").inc()
    INGESTION_BATCH_DURATION.observe(seconds)


def observe_batch_dead_lettered(messages: list[dict], seconds: float) -> None:
    """The whole batch failed in a way that is not an outage: all its events were dead-lettered."""
    EVENTS_DEAD_LETTERED.inc(sum(len(message.get("events") or []) for message in messages))
    INGESTION_BATCHES.labels("dead_lettered").inc()
    INGESTION_BATCH_DURATION.observe(seconds)


def observe_ingestion_requeued(seconds: float) -> None:
    INGESTION_BATCHES.labels("requeued").inc()
    INGESTION_BATCH_DURATION.observe(seconds)


def observe_clickhouse_insert(rows: int, seconds: float) -> None:
    CLICKHOUSE_INSERT_ROWS.inc(rows)
    CLICKHOUSE_INSERT_DURATION.observe(seconds)


# --- Serving -----------------------------------------------------------------------------


class ScrapeTimeCollector:
    """Values read from the shared stores when Prometheus scrapes, not kept by any process.

    Each source is read on its own: a store that is down leaves its metrics out (and the
    `bklog_scrape_source_up` gauge at 0) instead of failing the whole scrape.
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "bklog_scrape_source_up", "Whether a store could be read for this scrape (1) or not (0).", labels=["source"]
        )
        for source, read in (("redis", _redis_metrics), ("database", _database_metrics), ("disk", _disk_metrics)):
            try:
                families = list(read())
            except Exception:
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up


def _redis_metrics() -> Iterator[GaugeMetricFamily]:
    pipe = get_redis().pipeline(transaction=False)
    queues = list(Queue)
    for queue in queues:
        pipe.llen(queue.value)
    pipe.get(LATEST_EVENT_TS_KEY)
    pipe.get(LAST_INGESTED_KEY)
    pipe.hgetall(isolation.STATES_KEY)
    *depths, latest_event_ms, last_ingested, states = pipe.execute()

    depth = GaugeMetricFamily("bklog_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"])
    for queue, value in zip(queues, depths, strict=True):
        depth.add_metric([queue.value], int(value))
    yield depth
    by_state = GaugeMetricFamily(
        "bklog_projects_ingestion_state",
        "Projects per ingestion state, of those ever moved (pipeline/ingestion/isolation.py); "
        "a project never moved is healthy and not counted.",
        labels=["state"],
    )
    for state, count in isolation.counts_by_state(states).items():
        by_state.add_metric([state], count)
    yield by_state
    if latest_event_ms:
        yield GaugeMetricFamily(
            "bklog_latest_ingested_event_timestamp_seconds",
            "Timestamp (of the event itself) of the newest event stored so far.",
            value=int(latest_event_ms) / 1000,
        )
    if last_ingested:
        yield GaugeMetricFamily(
            "bklog_last_ingestion_timestamp_seconds",
            "Wall-clock time when an ingestion batch last stored events.",
            value=float(last_ingested),
        )


def _database_metrics() -> Iterator[GaugeMetricFamily]:
    """PostgreSQL connections in use and allowed (nothing for SQLite)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity")
        used, allowed = cursor.fetchone()
    yield GaugeMetricFamily("bklog_database_connections", "Connections open on the PostgreSQL server.", value=used)
    yield GaugeMetricFamily("bklog_database_max_connections", "PostgreSQL's max_connections setting.", value=allowed)


def _disk_metrics() -> Iterator[GaugeMetricFamily]:
    """Free space where this host keeps its local state (BKLOG_VAR_DIR)."""
    usage = shutil.disk_usage(settings.VAR_DIR)
    path = str(settings.VAR_DIR)
    free = GaugeMetricFamily("bklog_disk_free_bytes", "Free bytes on the file system of a path.", labels=["path"])
    free.add_metric([path], usage.free)
    size = GaugeMetricFamily("bklog_disk_size_bytes", "Size in bytes of the file system of a path.", labels=["path"])
    size.add_metric([path], usage.total)
    yield free
    yield size


class _ThisProcess:
    """This process's own metrics, when there is no multiprocess directory."""

    def collect(self):
        yield from REGISTRY.collect()


def build_registry(*, scrape_time: bool = True) -> CollectorRegistry:
    """A registry with every process's samples (multiprocess mode) and the scrape-time values."""
    registry = CollectorRegistry()
    if MULTIPROC_DIR:
        multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
    else:
        registry.register(_ThisProcess())
    if scrape_time:
        registry.register(ScrapeTimeCollector())
    return registry


def render(*, scrape_time: bool = True) -> tuple[bytes, str]:
    """The exposition text and its content type: the classic text format every Prometheus 2.x reads."""
    return generate_latest(build_registry(scrape_time=scrape_time)), CONTENT_TYPE_PLAIN_0_0_4


def mark_process_dead(pid: int) -> None:
    """Called when a Gunicorn worker or a Celery pool process exits (cleans its live gauges)."""
    if MULTIPROC_DIR:
        multiprocess.mark_process_dead(pid, MULTIPROC_DIR)


def start_worker_metrics_server(port: int, address: str = "0.0.0.0") -> None:
    """Serve this process tree's samples on `port`, for workers that run without a web process.

    The Redis and database values are left to `/metrics` on the web tier, so that summing
    over targets never counts them twice.
    """
    start_http_server(port, addr=address, registry=build_registry(scrape_time=False))
