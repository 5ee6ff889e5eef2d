"""Versioned ClickHouse schema migrations.

Each module `NNNN_name.py` holds `OPERATIONS`: SQL statements with `{database}` in place of the
database name, each idempotent (IF NOT EXISTS), so a migration interrupted half-way can simply
run again. The SQL must run on ClickHouse 18.16 (no DateTime64, Map, JSON, TTL, CODEC) and on a
current ClickHouse; tests run every statement on both.
"""
