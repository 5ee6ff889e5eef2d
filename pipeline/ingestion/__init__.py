"""Ingestion of captured events, docs/contracts.md#ingestion-order: one module per step, `batch` runs them in order."""
