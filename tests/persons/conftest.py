import pytest

from pipeline.persons.cache import get_cache


@pytest.fixture
def empty_distinct_id_cache():
    """The process's distinct-id cache empty before and after the test: persons read from the
    database, never from an earlier test's entries."""
    get_cache().clear()
    yield
    get_cache().clear()
