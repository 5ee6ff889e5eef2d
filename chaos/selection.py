"""Which events the chaos plugins fail on: a pure function of the event uuid, so the plugins (in
the workers) and the checker (here) agree without talking to each other."""

import uuid as uuid_module

PLUGIN_TIMEOUT_SECONDS = 0.3  # set in the chaos stack's environment
SLEEP_SECONDS = 2.0  # what the sleeper sleeps: well past the limit


def _number(event_uuid: str) -> int:
    try:
        return uuid_module.UUID(str(event_uuid)).int
    except ValueError:
        return 1  # not a uuid: never selected


def raises_on(event_uuid: str) -> bool:
    """1% of uuids."""
    return _number(event_uuid) % 100 == 0


def times_out_on(event_uuid: str) -> bool:
    """0.2% of uuids, disjoint from raises_on's."""
    return _number(event_uuid) % 500 == 7
