"""Plugins as the Django side sees them: models, admin and the REST API (docs/contracts.md#plugin-api).

The runtime that loads and calls plugins lives in `pipeline.plugins`.
"""
