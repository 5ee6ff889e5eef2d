"""Persons and their distinct ids (SPEC section 6): models, read-only admin, REST API."""
