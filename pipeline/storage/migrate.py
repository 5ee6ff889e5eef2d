"""Apply the ClickHouse migrations in pipeline/storage/migrations, once each, in order."""

import importlib
import pkgutil
import time
from collections.abc import Callable

from django.conf import settings

from pipeline.storage import migrations as migrations_package
from pipeline.storage.clickhouse import make_client

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS {database}.bklog_migrations (
    name String,
    applied_at DateTime
) ENGINE = MergeTree() ORDER BY name
"""


def migration_names() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(migrations_package.__path__) if m.name[:4].isdigit()]
    return sorted(names)


def operations(name: str, database: str) -> list[str]:
    module = importlib.import_module(f"{migrations_package.__name__}.{name}")
    return [sql.format(database=database) for sql in module.OPERATIONS]


def migrate(database: str | None = None, report: Callable[[str], None] = print) -> list[str]:
    """Create the database if needed and apply every migration not yet recorded."""
    database = database or settings.CLICKHOUSE_DATABASE
    client = make_client(database="default")
    try:
        client.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.execute(MIGRATIONS_TABLE.format(database=database))
        done = {row[0] for row in client.execute(f"SELECT name FROM {database}.bklog_migrations")}
        applied = []
        for name in migration_names():
            if name in done:
                continue
            report(f"Applying ClickHouse migration {name}...")
            for sql in operations(name, database):
                client.execute(sql)
            client.execute(
                f"INSERT INTO {database}.bklog_migrations (name, applied_at) VALUES",
                [(name, int(time.time()))],
            )
            applied.append(name)
        return applied
    finally:
        client.disconnect()
