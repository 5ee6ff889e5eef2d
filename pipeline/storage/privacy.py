"""Deleting stored events: the counts, the mutations and their progress (docs/privacy.md).

A ClickHouse mutation (`ALTER TABLE ... DELETE`) rewrites every part that holds a matching row,
in the background: the statement returns at once and `system.mutations` says when it is done
(`is_done`) and how many parts it still has to rewrite (`parts_to_do`). The table is
`mutation_target()`'s (`events`, or `events_local ON CLUSTER ...`), put in at run time as
`{target}`. Each mutation carries a marker, a string literal that is always true, so that its row
in `system.mutations` can be found by its command text.

Every statement is a constant listed in `QUERIES`, run by the tests on ClickHouse 18.16 and on a
current ClickHouse (chdb). A person's events are those of its distinct ids and those stored with
its person_id or the person_id of a person merged into it (uuids compared as strings: 18.16
cannot compare a UUID column with string literals).
"""

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from pipeline.storage.clickhouse import execute, mutation_target

_PERSONS = """
    team_id = %(team_id)s
  AND (distinct_id IN %(distinct_ids)s OR toString(person_id) IN %(person_ids)s)
"""

# '' and 0 / 2**62 stand for "any" (an empty IN () or a NULL is not valid SQL on 18.16).
_FILTER = """
    team_id = %(team_id)s
  AND (%(event)s = '' OR event = %(event)s)
  AND (%(distinct_id)s = '' OR distinct_id = %(distinct_id)s)
  AND timestamp_ms >= %(after_ms)s AND timestamp_ms < %(before_ms)s
"""

COUNT_PERSON_EVENTS = f"SELECT count() FROM events WHERE {_PERSONS}"
COUNT_FILTER_EVENTS = f"SELECT count() FROM events WHERE {_FILTER}"
DELETE_PERSON_EVENTS = f"ALTER TABLE {{target}} DELETE WHERE {_PERSONS} AND %(marker)s != ''"
DELETE_FILTER_EVENTS = f"ALTER TABLE {{target}} DELETE WHERE {_FILTER} AND %(marker)s != ''"

MUTATION_STATUS = """
SELECT mutation_id, is_done, parts_to_do FROM system.mutations
WHERE database = currentDatabase() AND table = %(table)s AND position(command, %(marker)s) > 0
"""

# On a cluster, every server's own system.mutations: each replica runs the mutation on its part
# of the events. remote() reads one server's table through the server we are connected to.
CLUSTER_SERVERS = """
SELECT DISTINCT host_address, port FROM system.clusters WHERE cluster = %(cluster)s
"""

SERVER_MUTATION_STATUS = """
SELECT mutation_id, is_done, parts_to_do FROM remote(%(address)s, system, mutations)
WHERE database = %(database)s AND table = %(table)s AND position(command, %(marker)s) > 0
"""

ANY_MS, NO_END_MS = 0, 2**62

_PERSON_EXAMPLE = {"team_id": 1, "distinct_ids": ("a", "b"), "person_ids": ("00000000-0000-0000-0000-000000000001",)}
_FILTER_EXAMPLE = {"team_id": 1, "event": "signed_up", "distinct_id": "", "after_ms": 0, "before_ms": 2**62}

QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "count_person_events": (COUNT_PERSON_EVENTS, _PERSON_EXAMPLE),
    "count_filter_events": (COUNT_FILTER_EVENTS, _FILTER_EXAMPLE),
    "delete_person_events": (DELETE_PERSON_EVENTS.format(target="events"), {**_PERSON_EXAMPLE, "marker": "m:1:"}),
    "delete_filter_events": (DELETE_FILTER_EVENTS.format(target="events"), {**_FILTER_EXAMPLE, "marker": "m:2:"}),
    "mutation_status": (MUTATION_STATUS, {"table": "events", "marker": "m:1:"}),
    "cluster_servers": (CLUSTER_SERVERS, {"cluster": "bklog"}),
}


@dataclass(frozen=True)
class MutationState:
    found: bool
    is_done: bool = False
    parts_to_do: int = 0


def person_params(team_id: int, distinct_ids: list[str], person_ids: list[str]) -> dict[str, Any]:
    # Tuples render as (a, b) for IN; ('',) keeps an empty list valid SQL and matches nothing real.
    return {
        "team_id": team_id,
        "distinct_ids": tuple(distinct_ids) or ("",),
        "person_ids": tuple(person_ids) or ("",),
    }


def filter_params(team_id: int, event: str, distinct_id: str, after_ms: int | None, before_ms: int | None) -> dict:
    return {
        "team_id": team_id,
        "event": event,
        "distinct_id": distinct_id,
        "after_ms": ANY_MS if after_ms is None else after_ms,
        "before_ms": NO_END_MS if before_ms is None else before_ms,
    }


def count_person_events(params: dict[str, Any]) -> int:
    return execute(COUNT_PERSON_EVENTS, params)[0][0]


def count_filter_events(params: dict[str, Any]) -> int:
    return execute(COUNT_FILTER_EVENTS, params)[0][0]


def delete_person_events(params: dict[str, Any], marker: str) -> None:
    execute(DELETE_PERSON_EVENTS.format(target=mutation_target()), {**params, "marker": marker})


def delete_filter_events(params: dict[str, Any], marker: str) -> None:
    execute(DELETE_FILTER_EVENTS.format(target=mutation_target()), {**params, "marker": marker})


def mutation_state(marker: str) -> MutationState:
    """The state of the mutation with this marker: on one server, its own; on a cluster, done
    once every server of every shard has done it, with their parts still to rewrite summed."""
    table = mutation_target().split()[0]
    if settings.CLICKHOUSE_CLUSTER:
        rows = []
        for host, port in execute(CLUSTER_SERVERS, {"cluster": settings.CLICKHOUSE_CLUSTER}):
            found = execute(
                SERVER_MUTATION_STATUS,
                {
                    "address": f"{host}:{port}",
                    "database": settings.CLICKHOUSE_DATABASE,
                    "table": table,
                    "marker": marker,
                },
            )
            if not found:
                return MutationState(found=False)  # issued ON CLUSTER: every server has it once it ran
            rows += found
    else:
        rows = execute(MUTATION_STATUS, {"table": table, "marker": marker})
    if not rows:
        return MutationState(found=False)
    return MutationState(
        found=True, is_done=all(row[1] for row in rows), parts_to_do=sum(max(0, row[2]) for row in rows)
    )
