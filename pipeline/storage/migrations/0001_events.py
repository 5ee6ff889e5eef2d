# Timestamps are epoch milliseconds in UInt64 columns: ClickHouse 18.16 has no DateTime64, and
# milliseconds must survive storage. `timestamp` (DateTime) is derived for partitioning.
OPERATIONS = [
    """
    CREATE TABLE IF NOT EXISTS {database}.events (
        uuid UUID,
        team_id Int64,
        event String,
        distinct_id String,
        properties String,
        timestamp_ms UInt64,
        created_at_ms UInt64,
        person_id UUID,
        person_properties String,
        elements_chain String,
        timestamp DateTime MATERIALIZED toDateTime(intDiv(timestamp_ms, 1000))
    )
    ENGINE = ReplacingMergeTree(created_at_ms)
    PARTITION BY toYYYYMM(toDateTime(intDiv(timestamp_ms, 1000)))
    ORDER BY (team_id, toDate(toDateTime(intDiv(timestamp_ms, 1000))), event, cityHash64(distinct_id), uuid)
    SETTINGS index_granularity = 8192
    """,
]
