"""Built-in plugins: one folder each, with plugin.json and plugin.py (docs/contracts.md#plugin-api)."""
