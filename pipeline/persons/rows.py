"""Person rows written in bulk, the way each database takes them fastest.

PostgreSQL: one statement per batch, every column passed as an array and unnested
(`INSERT ... SELECT FROM unnest(...)`, `UPDATE ... FROM unnest(...)`), so a batch of a
thousand persons is one statement, one plan and one round trip. SQLite: one prepared statement
stepped per row with executemany. Either way no ORM expressions: `bulk_update` builds a CASE
WHEN per row and field, which cost more than the rest of an ingestion batch.
(The table and columns are bklog_app.persons.models.Person's; tests/persons run these
statements on both databases.)
"""

from collections.abc import Sequence

import orjson
from django.db import connection

from bklog_app.persons.models import Person

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
            ("properties", "created_at", "is_identified", "version", "uuid"),
            [(p.properties, p.created_at, p.is_identified, v, p.uuid) for p, v in zip(persons, versions, strict=True)],
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


def _executemany(sql: str, names: tuple[str, ...], rows: list[tuple]) -> None:
    """Each value adapted by the Person field it goes to, as the ORM would (on SQLite: JSON
    text, UUID hex, datetime text)."""
    fields = [Person._meta.get_field(name) for name in names]
    adapted = [
        tuple(field.get_db_prep_save(value, connection) for field, value in zip(fields, row, strict=True))
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, adapted)
