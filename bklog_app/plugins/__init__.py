"""Plugins as the Django side sees them: models, admin and the REST API (SPEC section 5).

The runtime that loads and calls plugins lives in `pipeline.plugins`.
"""
