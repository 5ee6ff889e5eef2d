# Timestamps are epoch milliseconds in UInt64 columns: ClickHouse 18.16 has no DateTime64, and
# milliseconds must survive storage. `timestamp` (DateTime) is derived for partitioning.
#
# On one server `events` is the table itself. On a cluster (CLICKHOUSE_CLUSTER) every server
# holds `events_local`, replicated within its shard through ZooKeeper, and `events` is a
# Distributed table over them: every read and the ingestion INSERT go through `events`. Rows are
# sharded by person (by distinct id for events without one), so a person's events sit together.
# A replica drops an INSERT block it already has (same rows, same order), so a retried batch is
# not stored twice, and ReplacingMergeTree(created_at_ms) folds a re-sent uuid on merge.
COLUMNS = """
        uuid UUID,
        team_id Int64,
        event String,
        distinct_id String,
        properties String,
        timestamp_ms UInt64,
        created_at_ms UInt64,
        person_id UUID,
        person_properties String,
        elements_chain String"""

# Only in the tables that hold rows: a Distributed table given it would forward it in an INSERT,
# which ClickHouse 18.16 refuses for a MATERIALIZED column.
DERIVED = """,
        timestamp DateTime MATERIALIZED toDateTime(intDiv(timestamp_ms, 1000))
"""

LAYOUT = """
    PARTITION BY toYYYYMM(toDateTime(intDiv(timestamp_ms, 1000)))
    ORDER BY (team_id, toDate(toDateTime(intDiv(timestamp_ms, 1000))), event, cityHash64(distinct_id), uuid)
    SETTINGS index_granularity = 8192
"""

SHARDING_KEY = (
    "cityHash64(if(person_id = toUUID('00000000-0000-0000-0000-000000000000'), distinct_id, toString(person_id)))"
)

OPERATIONS = [
    f"CREATE TABLE IF NOT EXISTS {{database}}.events ({COLUMNS}{DERIVED}) ENGINE = ReplacingMergeTree(created_at_ms) {LAYOUT}",
]

# {shard} and {replica} are each server's macros (its config's <macros>), left for ClickHouse.
CLUSTER_OPERATIONS = [
    f"""
    CREATE TABLE IF NOT EXISTS {{database}}.events_local ON CLUSTER {{cluster}} ({COLUMNS}{DERIVED})
    ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{{{{shard}}}}/{{database}}/events_local', '{{{{replica}}}}', created_at_ms)
    {LAYOUT}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {{database}}.events ON CLUSTER {{cluster}} ({COLUMNS})
    ENGINE = Distributed({{cluster}}, {{database}}, events_local, {SHARDING_KEY})
    """,
]
