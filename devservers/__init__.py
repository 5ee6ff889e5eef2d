"""Real Redis, ClickHouse and PostgreSQL servers on loopback, started by the Python process that
needs them: the test suite (tests/conftest.py), the benchmark harness (bench/) and the fault
suite (chaos/). A package of its own so that none of them imports another's code."""

from devservers.servers import ClickHouseServer, PostgresServer, RedisServer, ServerError, free_port

__all__ = ["ClickHouseServer", "PostgresServer", "RedisServer", "ServerError", "free_port"]
