"""Exports of stored events (docs/contracts.md#exports): gzipped CSV / JSON-lines files, and historical
exports through a plugin config's export_events. Both run on the `async_export` queue."""
