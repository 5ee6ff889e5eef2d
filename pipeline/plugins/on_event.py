"""`on_event` for stored events (docs/contracts.md#plugin-api), on the `default` queue.

One task per config and stored batch; an event whose call raises RetryError is tried again
alone, on the docs/contracts.md#plugin-api schedule (5 attempts, 5, 10, 20, 40 s apart), then dead-lettered. Any other
error is not retried: the event is dead-lettered at once, ready to replay once the plugin is
fixed.
"""

from pipeline.deadletters.record import dead_letter
from pipeline.errors import is_outage
from pipeline.plugins import registry
from pipeline.plugins.api import RetryError
from pipeline.plugins.retries import ON_EVENT_DELAYS, RetryLater, max_attempts, next_delay


def run_on_event(config_id: int, events: list[dict], attempt: int) -> RetryLater | None:
    """Call on_event for each event; the events that asked for a retry come back as the next
    attempt, for the task to queue."""
    snapshot = registry.config_snapshot(config_id)
    if snapshot is None:
        return None  # disabled or deleted since: on_event is best effort for configs that are off
    instance = registry.instance_for(snapshot)
    if instance is None or not instance.has("on_event"):
        return None
    retry: list[dict] = []
    for event in events:
        try:
            instance.method("on_event", event)
        except RetryError as exc:
            if next_delay(ON_EVENT_DELAYS, attempt) is None:
                _give_up(snapshot, instance, event, exc, attempt)
            else:
                retry.append(event)
                last_retry_error = exc
        except Exception as exc:
            if is_outage(exc):
                raise
            _give_up(snapshot, instance, event, exc, attempt)
        else:
            registry.record_success(snapshot)
    if not retry:
        return None
    delay = next_delay(ON_EVENT_DELAYS, attempt)
    instance.sink.system(
        "WARN",
        f"on_event asked for a retry for {len(retry)} event(s) (attempt {attempt} of "
        f"{max_attempts(ON_EVENT_DELAYS)}); next attempt in {delay:g} s: {last_retry_error}",
    )
    instance.sink.flush()
    return RetryLater((config_id, retry, attempt + 1), delay)


def _give_up(snapshot, instance, event: dict, exc: BaseException, attempt: int) -> None:
    letter = dead_letter(
        snapshot.project_id,
        "on_event",
        exc,
        {"events": [event]},
        {"plugin_config_id": snapshot.id, "attempts": attempt},
    )
    instance.sink.system(
        "ERROR", f"on_event gave up on event {event.get('uuid')} after {attempt} attempt(s); dead letter {letter.pk}"
    )
    registry.record_failure(snapshot, exc, method="on_event", event=event, sink=instance.sink)
