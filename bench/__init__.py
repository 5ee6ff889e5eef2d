"""The benchmark harness: `python -m bench [scenario ...] [--runs N] [--quick]` (docs/performance.md).

It starts the whole stack under supervisord (or reuses the one it started before), drives load
from a separate process over loopback, and writes bench/results/<timestamp>.json and .md.
"""
