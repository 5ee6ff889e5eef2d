"""Ingestion of captured events, SPEC section 4: one module per step, `batch` runs them in order."""
