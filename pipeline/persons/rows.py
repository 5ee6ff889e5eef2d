"""Person and distinct id rows read and written in bulk, the way each database takes them fastest.

PostgreSQL: one statement per batch, whatever projects it spans, every column (the project id
among them) passed as an array and unnested (`INSERT ... SELECT FROM unnest(...)`, `UPDATE ...
FROM unnest(...)`, one index probe per `unnest(project ids, distinct ids)` pair to read), so a
batch of a thousand persons is one statement, one plan and one round trip. SQLite: one prepared
statement stepped per row with executemany, and one read with a condition per project. Writes
use no ORM expressions: `bulk_update` builds a CASE WHEN per row and field, which cost more than
the rest of an ingestion batch, and `bulk_create` builds a model instance per row (half of a
batch's persons are often new).
(The tables and columns are bklog_app.persons.models.Person's and PersonDistinctId's;
tests/persons run these statements on both databases.)
"""

from collections.abc import Sequence
from functools import reduce
from operator import or_
from uuid import UUID

import orjson
import psycopg
from django.db import connection
from django.db.models import Q

from bklog_app.persons.models import Person, PersonDistinctId

# One probe of the (project, distinct id) unique index per pair, whatever the planner estimates of
# the unnest (LIMIT 1 keeps the subquery a parameterised lookup; the pair is unique anyway): as a
# plain join it planned a merge join on the project alone, 10 s for 5,000 ids of one project.
_PG_READ = """
SELECT t.project_id, t.distinct_id, found.uuid, found.properties, found.created_at, found.is_identified,
    found.version
FROM unnest(%b::bigint[], %b::varchar[]) AS t(project_id, distinct_id)
CROSS JOIN LATERAL (
    SELECT person.uuid, person.properties::text, person.created_at, person.is_identified, person.version
    FROM persons_persondistinctid AS did
    JOIN persons_person AS person ON person.uuid = did.person_id
    WHERE did.project_id = t.project_id AND did.distinct_id = t.distinct_id
    LIMIT 1
) AS found
"""
_PG_INSERT = """
INSERT INTO persons_person (uuid, project_id, properties, created_at, is_identified, version)
SELECT t.uuid, t.project_id, t.properties::jsonb, t.created_at, t.is_identified, 0
FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::timestamptz[], %b::boolean[])
    AS t(uuid, project_id, properties, created_at, is_identified)
"""
_PG_UPDATE = """
UPDATE persons_person AS person
SET properties = t.properties::jsonb, created_at = t.created_at, is_identified = t.is_identified,
    version = t.version
FROM unnest(%b::uuid[], %b::text[], %b::timestamptz[], %b::boolean[], %b::bigint[])
    AS t(uuid, properties, created_at, is_identified, version)
WHERE person.uuid = t.uuid
"""
# In the given order (sorted by project and distinct id, so concurrent writers take the unique
# index's locks in one order).
_PG_INSERT_DISTINCT_IDS = """
INSERT INTO persons_persondistinctid (project_id, distinct_id, person_id)
SELECT t.project_id, t.distinct_id, t.person_id
FROM unnest(%b::bigint[], %b::text[], %b::uuid[]) WITH ORDINALITY AS t(project_id, distinct_id, person_id, n)
ORDER BY t.n
"""
_INSERT_DISTINCT_ID = "INSERT INTO persons_persondistinctid (project_id, distinct_id, person_id) VALUES (%s, %s, %s)"
_INSERT = (
    "INSERT INTO persons_person (uuid, project_id, properties, created_at, is_identified, version) "
    "VALUES (%s, %s, %s, %s, %s, 0)"
)
_UPDATE = "UPDATE persons_person SET properties = %s, created_at = %s, is_identified = %s, version = %s WHERE uuid = %s"


def read(pairs: Sequence[tuple[int, str]]) -> list[tuple]:
    """(project id, distinct id, person uuid, properties, created_at, is_identified, version) for
    each of these (project id, distinct id) pairs that has a person."""
    if not pairs:
        return []
    if connection.vendor == "postgresql":
        with _array_cursor() as cursor:
            cursor.execute(_PG_READ, [[project_id for project_id, _ in pairs], [did for _, did in pairs]])
            return [(p, did, uuid, _json_value(props), *rest) for p, did, uuid, props, *rest in cursor.fetchall()]
    by_project: dict[int, list[str]] = {}
    for project_id, distinct_id in pairs:
        by_project.setdefault(project_id, []).append(distinct_id)
    wanted = reduce(or_, (Q(project_id=project_id, distinct_id__in=ids) for project_id, ids in by_project.items()))
    return list(
        PersonDistinctId.objects.filter(wanted).values_list(
            "project_id",
            "distinct_id",
            "person_id",
            "person__properties",
            "person__created_at",
            "person__is_identified",
            "person__version",
        )
    )


def insert(persons: Sequence[tuple[int, object]]) -> None:
    """New persons (version 0), as (project id, person) pairs: each person an object with uuid,
    properties, created_at, is_identified."""
    if not persons:
        return
    if connection.vendor == "postgresql":
        people = [person for _, person in persons]
        uuids, *columns = _columns(people)
        _execute(_PG_INSERT, [uuids, [project_id for project_id, _ in persons], *columns])
    else:
        _executemany(
            _INSERT,
            Person,
            ("uuid", "project", "properties", "created_at", "is_identified"),
            [(p.uuid, project_id, p.properties, p.created_at, p.is_identified) for project_id, p in persons],
        )


def update(persons: Sequence) -> None:
    """Changed persons: as for insert, plus loaded_version (the row's version becomes one more)."""
    if not persons:
        return
    versions = [person.loaded_version + 1 for person in persons]
    if connection.vendor == "postgresql":
        _execute(_PG_UPDATE, [*_columns(persons), versions])
    else:
        _executemany(
            _UPDATE,
            Person,
            ("properties", "created_at", "is_identified", "version", "uuid"),
            [(p.properties, p.created_at, p.is_identified, v, p.uuid) for p, v in zip(persons, versions, strict=True)],
        )


def insert_distinct_ids(rows: Sequence[tuple[int, str, UUID]]) -> None:
    """(project id, distinct id, person uuid), each distinct id new to its project; a unique
    violation raises IntegrityError as bulk_create would."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        _execute(_PG_INSERT_DISTINCT_IDS, [list(column) for column in zip(*rows, strict=True)])
    else:
        _executemany(_INSERT_DISTINCT_ID, PersonDistinctId, ("project", "distinct_id", "person"), list(rows))


def _columns(persons: Sequence) -> list[list]:
    """uuid, properties (JSON text), created_at, is_identified: one list each, for unnest."""
    return [
        [person.uuid for person in persons],
        [_json_text(person.properties) for person in persons],
        [person.created_at for person in persons],
        [person.is_identified for person in persons],
    ]


def _json_text(value) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson refuses (integers beyond 64 bits): the ORM's own encoding
        return _PROPERTIES.get_prep_value(value)


def _json_value(text: str):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what orjson refuses (integers beyond 64 bits): the ORM's own decoding
        return _PROPERTIES.from_db_value(text, None, connection)


_PROPERTIES = Person._meta.get_field("properties")


def _execute(sql: str, params: list) -> None:
    with _array_cursor() as cursor:
        cursor.execute(sql, params)


def _array_cursor():
    """A cursor for the `%b` statements above: it binds parameters on the server, and psycopg
    sends each array in binary, every element packed in C. Django's own cursor binds on the client
    and writes each element out as SQL text in Python: 4 to 8 times the CPU for the thousands of
    ids and uuids of a batch. Django still wraps it (query logging, errors as django.db's); no
    statement is prepared (Django's `prepare_threshold` of None holds), so poolers keep working."""
    connection.ensure_connection()
    return connection._prepare_cursor(psycopg.Cursor(connection.connection))


def _executemany(sql: str, model, names: tuple[str, ...], rows: list[tuple]) -> None:
    """Each value adapted by the model field it goes to, as the ORM would (on SQLite: JSON
    text, UUID hex, datetime text)."""
    fields = [model._meta.get_field(name) for name in names]
    adapted = [
        tuple(field.get_db_prep_save(value, connection) for field, value in zip(fields, row, strict=True))
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, adapted)
