"""A plugin that fails on purpose, on a fixed 1% of events (chosen by uuid, so the run can check
that exactly those events carry it in `$plugins_failed`)."""

from chaos.selection import raises_on


def process_event(event, meta):
    if raises_on(event["uuid"]):
        raise ValueError(f"chaos: this plugin fails on event {event['uuid']} on purpose")
    return event
