"""Apply the ClickHouse migrations in pipeline/storage/migrations, once each, in order.

A migration module lists its statements in `OPERATIONS` (one server) and, when the tables differ
on a cluster, in `CLUSTER_OPERATIONS` too (CLICKHOUSE_CLUSTER set: `ON CLUSTER` DDL, which every
server of the cluster runs, coordinated through ZooKeeper). Every statement is idempotent
(`IF NOT EXISTS`), so a migration interrupted half-way is simply run again.

On a cluster the record of applied migrations is itself replicated to every server, so that a
`migrate_clickhouse` run through any server knows what is done.
"""

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

CLUSTER_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS {database}.bklog_migrations ON CLUSTER {cluster} (
    name String,
    applied_at DateTime
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{database}/bklog_migrations', '{{replica}}') ORDER BY name
"""


def migration_names() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(migrations_package.__path__) if m.name[:4].isdigit()]
    return sorted(names)


def operations(name: str, database: str, cluster: str = "") -> list[str]:
    module = importlib.import_module(f"{migrations_package.__name__}.{name}")
    if cluster:
        statements = getattr(module, "CLUSTER_OPERATIONS", module.OPERATIONS)
        return [sql.format(database=database, cluster=cluster) for sql in statements]
    return [sql.format(database=database) for sql in module.OPERATIONS]


def migrate(database: str | None = None, report: Callable[[str], None] = print) -> list[str]:
    """Create the database if needed and apply every migration not yet recorded."""
    database = database or settings.CLICKHOUSE_DATABASE
    cluster = settings.CLICKHOUSE_CLUSTER
    on_cluster = f" ON CLUSTER {cluster}" if cluster else ""
    client = make_client(database="default")
    try:
        client.execute(f"CREATE DATABASE IF NOT EXISTS {database}{on_cluster}")
        client.execute(
            (CLUSTER_MIGRATIONS_TABLE if cluster else MIGRATIONS_TABLE).format(database=database, cluster=cluster)
        )
        done = {row[0] for row in client.execute(f"SELECT name FROM {database}.bklog_migrations")}
        applied = []
        for name in migration_names():
            if name in done:
                continue
            report(f"Applying ClickHouse migration {name}{' on cluster ' + cluster if cluster else ''}...")
            for sql in operations(name, database, cluster):
                client.execute(sql)
            client.execute(
                f"INSERT INTO {database}.bklog_migrations (name, applied_at) VALUES",
                [(name, int(time.time()))],
            )
            applied.append(name)
        return applied
    finally:
        client.disconnect()
