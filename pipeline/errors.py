"""Which failures are outages of a dependency (retry, never drop) and which are bad data."""

from django.db import InterfaceError, OperationalError

from pipeline.redis import REDIS_ERRORS
from pipeline.storage.clickhouse import ClickHouseUnavailable


class DependencyUnavailable(Exception):
    """A store this work needs (ClickHouse, Redis, the database) is down; retry with backoff."""


OUTAGE_EXCEPTIONS = (DependencyUnavailable, ClickHouseUnavailable, OperationalError, InterfaceError, *REDIS_ERRORS)


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGE_EXCEPTIONS)
