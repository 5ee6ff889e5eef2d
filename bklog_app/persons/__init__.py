"""Persons and their distinct ids (docs/contracts.md#persons): models, read-only admin, REST API."""
