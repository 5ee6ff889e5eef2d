"""Persons and identity (SPEC section 6): ingestion step 6."""
