"""The processing core: ingestion steps, plugins, persons, ClickHouse storage, exports.

Nothing here imports view code. Celery tasks live beside the domain code they call and stay thin.
"""
