"""Persons and identity (docs/contracts.md#persons): ingestion step 6."""
