"""The real servers the tests start live in devservers/ (bench/ and chaos/ use them too); this
name stays for the test modules that import it from here."""

from devservers import ClickHouseServer, PostgresServer, RedisServer, ServerError, free_port

__all__ = ["ClickHouseServer", "PostgresServer", "RedisServer", "ServerError", "free_port"]
