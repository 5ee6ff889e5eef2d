"""The retry schedules of docs/contracts.md#plugin-api, in one place, and what a retry hands to its task."""

from dataclasses import dataclass

from django.conf import settings

# Delays before attempts 2, 3, ...: on_event has 5 attempts, export_events 1 + 3 retries.
ON_EVENT_DELAYS = (5, 10, 20, 40)
EXPORT_EVENTS_DELAYS = (6, 12, 24)
# Plugin jobs that raise RetryError follow the on_event schedule.
JOB_DELAYS = ON_EVENT_DELAYS


def next_delay(delays: tuple[float, ...], attempt: int) -> float | None:
    """Seconds until the attempt after `attempt` (1-based), or None when it was the last."""
    if attempt > len(delays):
        return None
    return delays[attempt - 1] * settings.PLUGIN_RETRY_DELAY_SCALE


def max_attempts(delays: tuple[float, ...]) -> int:
    return len(delays) + 1


@dataclass(frozen=True)
class RetryLater:
    """The next attempt, for the task to queue: its arguments, `countdown` seconds from now."""

    args: tuple
    countdown: float
