"""Plugin work that failed for good goes to the dead-letter store; from there it can be replayed.

Kinds: `on_event` (payload {"events": [...]}), `export_events` (payload {"events": [...]}) and
`job` (payload {"name", "payload"}); the context names the plugin config. Replaying hands the
work to the `default` queue again, as a first attempt.
"""

import traceback

from django.utils import timezone

from bklog_app.models import DeadLetter

PLUGIN_KINDS = ("on_event", "export_events", "job")


def dead_letter(project_id: int, kind: str, error: BaseException, payload: dict, context: dict) -> DeadLetter:
    message = f"{type(error).__name__}: {error}"
    return DeadLetter.objects.create(
        project_id=project_id,
        kind=kind,
        step=kind,
        error=message + "\n" + "".join(traceback.format_exception(error))[-4000:],
        payload=payload,
        context=context,
    )


def replay(dead_letter_id: int) -> bool:
    """Queue the dead-lettered plugin work again; False if it is not plugin work or was replayed."""
    from pipeline.plugins import exports, jobs, tasks

    letter = DeadLetter.objects.filter(pk=dead_letter_id, kind__in=PLUGIN_KINDS, replayed_at__isnull=True).first()
    if letter is None:
        return False
    if not DeadLetter.objects.filter(pk=letter.pk, replayed_at__isnull=True).update(replayed_at=timezone.now()):
        return False  # someone else replayed it just now
    config_id = int(letter.context["plugin_config_id"])
    if letter.kind == "on_event":
        tasks.on_event.apply_async(args=[config_id, letter.payload["events"], 1])
    elif letter.kind == "export_events":
        exports.export_now(config_id, letter.payload["events"])
    else:
        jobs.schedule_job(config_id, letter.payload["name"], letter.payload.get("payload") or {}, timezone.now())
    return True
