"""Person and distinct id rows written in bulk, the way each database takes them fastest.

PostgreSQL: one statement per batch, every column passed as an array and unnested
(`INSERT ... SELECT FROM unnest(...)`, `UPDATE ... FROM unnest(...)`), so a batch of a
thousand persons is one statement, one plan and one round trip. SQLite: one prepared statement
stepped per row with executemany. Either way no ORM expressions: `bulk_update` builds a CASE
WHEN per row and field, which cost more than the rest of an ingestion batch, and `bulk_create`
builds a model instance per row (half of a batch's persons are often new).
(The tables and columns are bklog_app.persons.models.Person's and PersonDistinctId's;
tests/persons run these statements on both databases.)
"""

from collections.abc import Sequence
from uuid import UUID

import orjson
from django.db import connection

from bklog_app.persons.models import Person, PersonDistinctId

_PG_INSERT = """
INSERT INTO persons_person (uuid, project_id, properties, created_at, is_identified, version)
SELECT t.uuid, %s, t.properties::jsonb, t.created_at, t.is_identified, 0
FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::boolean[])
    AS t(uuid, properties, created_at, is_identified)
"""
_PG_UPDATE = """
UPDATE persons_person AS person
SET properties = t.properties::jsonb, created_at = t.created_at, is_identified = t.is_identified,
    version = t.version
FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::boolean[], %s::bigint[])
    AS t(uuid, properties, created_at, is_identified, version)
WHERE person.uuid = t.uuid
"""
# In the given order (sorted by distinct id, so concurrent writers take the unique index's locks
# in one order).
_PG_INSERT_DISTINCT_IDS = """
INSERT INTO persons_persondistinctid (project_id, distinct_id, person_id)
SELECT %s, t.distinct_id, t.person_id
FROM unnest(%s::text[], %s::uuid[]) WITH ORDINALITY AS t(distinct_id, person_id, n)
ORDER BY t.n
"""
_INSERT_DISTINCT_ID = "INSERT INTO persons_persondistinctid (project_id, distinct_id, person_id) VALUES (%s, %s, %s)"
_INSERT = (
    "INSERT INTO persons_person (uuid, project_id, properties, created_at, is_identified, version) "
    "VALUES (%s, %s, %s, %s, %s, 0)"
)
_UPDATE = "UPDATE persons_person SET properties = %s, created_at = %s, is_identified = %s, version = %s WHERE uuid = %s"


def insert(project_id: int, persons: Sequence) -> None:
    """New persons (version 0): objects with uuid, properties, created_at, is_identified."""
    if not persons:
        return
    if connection.vendor == "postgresql":
        _execute(_PG_INSERT, [project_id, *_columns(persons)])
    else:
        _executemany(
            _INSERT,
            Person,
            ("uuid", "project", "properties", "created_at", "is_identified"),
            [(p.uuid, project_id, p.properties, p.created_at, p.is_identified) for p in persons],
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


def insert_distinct_ids(project_id: int, pairs: Sequence[tuple[str, UUID]]) -> None:
    """(distinct id, person uuid) pairs, new to the project; a unique violation raises
    IntegrityError as bulk_create would."""
    if not pairs:
        return
    if connection.vendor == "postgresql":
        _execute(_PG_INSERT_DISTINCT_IDS, [project_id, [did for did, _ in pairs], [uuid for _, uuid in pairs]])
    else:
        _executemany(
            _INSERT_DISTINCT_ID,
            PersonDistinctId,
            ("project", "distinct_id", "person"),
            [(project_id, did, uuid) for did, uuid in pairs],
        )


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


_PROPERTIES = Person._meta.get_field("properties")


def _execute(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


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
