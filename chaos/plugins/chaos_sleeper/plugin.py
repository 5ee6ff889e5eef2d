"""A plugin that runs past its time limit on a fixed 0.2% of events (chosen by uuid)."""

import time

from chaos.selection import SLEEP_SECONDS, times_out_on


def process_event(event, meta):
    if times_out_on(event["uuid"]):
        time.sleep(SLEEP_SECONDS)  # longer than the chaos stack's PLUGIN_TIMEOUT_SECONDS
    return event
