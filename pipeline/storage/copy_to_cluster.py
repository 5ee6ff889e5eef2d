"""Growing one server into the cluster: copy its events into the cluster's `events`, a month
partition at a time (docs/operations.md#growing-from-one-node-to-the-cluster).

Each copy is one `INSERT INTO events SELECT ... FROM remote(source)` run by a server of the
cluster: rows go from the source to the shards inside ClickHouse, never through Python, keep
their uuid and timestamps, and the Distributed table shards them by its key as ingestion does.

A run is safe to repeat. Per month it compares the source's row count with the cluster's: equal,
the month is done (skipped); none on the cluster, it is copied; fewer (a run interrupted during
that month), the month's partition is dropped on every shard and copied again; more, the cluster
holds events the source does not (it already took new ones for that month): nothing is touched
and the run fails, for the operator to look at.
"""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors
from django.conf import settings

from pipeline.storage.clickhouse import OUTAGE_ERRORS, OUTAGE_SERVER_CODES, make_client
from pipeline.storage.events import EVENT_COLUMNS

# The partition key of the events tables (pipeline/storage/migrations/0001_events.py).
MONTH = "toYYYYMM(toDateTime(intDiv(timestamp_ms, 1000)))"

# The source's events as the cluster's server reads them; the credentials are bklog's own.
SOURCE_EVENTS = "remote(%(source)s, %(source_database)s, 'events', %(user)s, %(password)s)"

SOURCE_MONTHS = f"""
SELECT {MONTH} AS month, count() FROM {SOURCE_EVENTS} GROUP BY month ORDER BY month
"""

CLUSTER_MONTH_ROWS = f"""
SELECT count() FROM events WHERE {MONTH} = %(month)s
"""

COPY_MONTH = f"""
INSERT INTO events ({", ".join(EVENT_COLUMNS)})
SELECT {", ".join(EVENT_COLUMNS)} FROM {SOURCE_EVENTS} WHERE {MONTH} = %(month)s
"""

# {database} and {cluster} are identifiers, formatted in before the month is substituted.
DROP_CLUSTER_MONTH = """
ALTER TABLE {database}.events_local ON CLUSTER {cluster} DROP PARTITION %(month)s
"""

# A month is one query, which can take longer than a query's usual timeout.
COPY_TIMEOUT_SECONDS = 6 * 3600

_EXAMPLE_SOURCE = {"source": "127.0.0.1:9000", "source_database": "bklog", "user": "default", "password": ""}

# Run on ClickHouse 18.16 and on chdb by tests/pipeline/test_copy_to_cluster_sql.py, `source`
# set to the test's server. DROP_CLUSTER_MONTH needs a cluster: tests/cluster runs it.
QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "source_months": (SOURCE_MONTHS, _EXAMPLE_SOURCE),
    "cluster_month_rows": (CLUSTER_MONTH_ROWS, {"month": 202401}),
    "copy_month": (COPY_MONTH, {**_EXAMPLE_SOURCE, "month": 202401}),
}

SOURCE_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:]+\]|[\w.-]+):\d{1,5}")

# Server error codes of a remote() source that does not answer or has no such table:
# ALL_CONNECTION_TRIES_FAILED, NETWORK_ERROR, SOCKET_TIMEOUT, UNKNOWN_TABLE, UNKNOWN_DATABASE.
_SOURCE_UNREACHABLE_CODES = frozenset({279, 210, 209, 60, 81})


class CopyRefused(Exception):
    """The copy cannot start or cannot go on; the message says what to do."""


@dataclass(frozen=True)
class MonthCopy:
    """What a run did with one month partition."""

    month: int
    source_rows: int
    cluster_rows: int  # before this run touched it
    decision: str  # "skip", "copy", "recopy" (partial: dropped, then copied) or "conflict"
    copied_rows: int = 0
    seconds: float = 0.0


def copy_events_to_cluster(
    source: str,
    source_database: str = "bklog",
    dry_run: bool = False,
    report: Callable[[str], None] = print,
) -> list[MonthCopy]:
    """Copy every month of `source`'s (HOST:PORT) events that the cluster lacks; returns one
    MonthCopy per month of the source, and raises CopyRefused when it cannot go on."""
    cluster = settings.CLICKHOUSE_CLUSTER
    if not cluster:
        raise CopyRefused(
            "CLICKHOUSE_CLUSTER is not set: this command copies a server's events into a cluster. Set "
            "CLICKHOUSE_CLUSTER (and CLICKHOUSE_HOST/CLICKHOUSE_ALT_HOSTS) to the cluster's, run "
            "`manage.py migrate_clickhouse`, then run it again."
        )
    if not SOURCE_ADDRESS.fullmatch(source):
        raise CopyRefused(
            f"--source must be HOST:PORT, the old server's native protocol address as the cluster's servers "
            f"reach it (e.g. clickhouse-old:9000), not {source!r}."
        )
    params = {
        "source": source,
        "source_database": source_database,
        "user": settings.CLICKHOUSE_USER,
        "password": settings.CLICKHOUSE_PASSWORD,
    }
    client = make_client(timeout=COPY_TIMEOUT_SECONDS)
    try:
        source_months = _source_months(client, params)
        report(
            f"{len(source_months)} month(s), {sum(source_months.values()):,} events on {source} "
            f"(database {source_database}); cluster {cluster}{' (dry run: nothing changes)' if dry_run else ''}."
        )
        results = [_copy_month(client, params, month, rows, dry_run, report) for month, rows in source_months.items()]
    except ch_errors.ServerException as exc:
        if exc.code not in OUTAGE_SERVER_CODES:
            raise
        raise CopyRefused(_cluster_down(_first_line(exc))) from exc
    except OUTAGE_ERRORS as exc:
        raise CopyRefused(_cluster_down(str(exc))) from exc
    finally:
        client.disconnect()
    conflicts = [str(result.month) for result in results if result.decision == "conflict"]
    if conflicts:
        raise CopyRefused(
            f"the cluster holds more events than {source} for month(s) {', '.join(conflicts)}: it took new "
            "events for them already. Those months were left as they are; copy before pointing ingestion at "
            "the cluster, or compare the two by hand (docs/operations.md#growing-from-one-node-to-the-cluster)."
        )
    return results


def _source_months(client: Client, params: dict[str, Any]) -> dict[int, int]:
    try:
        return dict(client.execute(SOURCE_MONTHS, params))
    except ch_errors.ServerException as exc:
        if exc.code not in _SOURCE_UNREACHABLE_CODES:
            raise
        raise CopyRefused(
            f"the cluster's ClickHouse could not read {params['source_database']}.events at {params['source']}: "
            "check that every server of the cluster reaches that address (remote() runs there), that "
            "--source-database names the source's database, and that CLICKHOUSE_USER/CLICKHOUSE_PASSWORD are "
            f"valid there too. ClickHouse said: {_first_line(exc)}"
        ) from exc


def _copy_month(
    client: Client,
    params: dict[str, Any],
    month: int,
    source_rows: int,
    dry_run: bool,
    report: Callable[[str], None],
) -> MonthCopy:
    [(cluster_rows,)] = client.execute(CLUSTER_MONTH_ROWS, {"month": month})
    counts = f"{month}: source {source_rows:,}, cluster {cluster_rows:,}"
    if cluster_rows == source_rows:
        report(f"{counts}: already copied, skipped.")
        return MonthCopy(month, source_rows, cluster_rows, "skip")
    if cluster_rows > source_rows:
        report(f"{counts}: the cluster has more, left as it is.")
        return MonthCopy(month, source_rows, cluster_rows, "conflict")
    decision = "copy" if cluster_rows == 0 else "recopy"
    if dry_run:
        action = "would copy" if decision == "copy" else "partial: would drop the month on the cluster and copy"
        report(f"{counts}: {action}.")
        return MonthCopy(month, source_rows, cluster_rows, decision)
    started = time.perf_counter()
    if decision == "recopy":
        report(f"{counts}: partial, dropping the month on the cluster and copying it again...")
        drop = DROP_CLUSTER_MONTH.format(database=settings.CLICKHOUSE_DATABASE, cluster=settings.CLICKHOUSE_CLUSTER)
        client.execute(drop, {"month": month})
    else:
        report(f"{counts}: copying...")
    client.execute(COPY_MONTH, {**params, "month": month})
    seconds = time.perf_counter() - started
    [(copied,)] = client.execute(CLUSTER_MONTH_ROWS, {"month": month})
    if copied != source_rows:
        raise CopyRefused(
            f"{month}: the cluster counts {copied:,} events after the copy, the source {source_rows:,}: did "
            "events reach either side meanwhile? Run the command again once ingestion writes to one of them only."
        )
    report(f"{month}: copied {copied:,} events in {seconds:.1f} s ({copied / max(seconds, 1e-6):,.0f} events/s).")
    return MonthCopy(month, source_rows, cluster_rows, decision, copied, seconds)


def _cluster_down(detail: str) -> str:
    return (
        "a ClickHouse server did not answer (a shard of the cluster, or the source): run the command again once "
        "they all answer; months already copied are skipped and a month cut short is copied again. "
        f"ClickHouse said: {detail}"
    )


def _first_line(exc: ch_errors.ServerException) -> str:
    lines = [line.strip() for line in str(exc.message).splitlines() if line.strip()]
    detail = next((line for line in lines if "There is no table" in line or "Connection refused" in line), None)
    return detail or (lines[0] if lines else str(exc))
