"""ClickHouse storage: the connection, the schema migrations, and every query the project runs."""
