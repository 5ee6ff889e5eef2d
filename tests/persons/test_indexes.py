"""The persons tables keep only the indexes their queries use: every index is written for each
new person and distinct id, the heaviest writes of an ingestion batch (docs/performance.md)."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def _indexed_columns(table: str) -> list[tuple[str, ...]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return sorted(tuple(c["columns"]) for c in constraints.values() if c["index"] or c["unique"] or c["primary_key"])


def test_the_project_has_no_index_of_its_own_where_a_composite_one_starts_with_it():
    assert _indexed_columns("persons_person") == [("project_id", "created_at", "uuid"), ("uuid",)]
    assert _indexed_columns("persons_persondistinctid") == [("id",), ("person_id",), ("project_id", "distinct_id")]
