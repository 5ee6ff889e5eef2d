"""Ingestion step 8: hand stored events to on_event / export_events work on the default queue.

This is the extension point the ingestion batch calls after a successful INSERT.
"""

from collections.abc import Sequence


def dispatch_stored_events(events: Sequence[dict]) -> None:
    return None
