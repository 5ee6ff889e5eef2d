"""Built-in plugins: one folder each, with plugin.json and plugin.py (SPEC section 5)."""
