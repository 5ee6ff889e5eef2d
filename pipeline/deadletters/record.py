"""Writing dead letters, and the text every letter's `error` holds."""

import traceback

from bklog_app.models import DeadLetter

EVENT_KIND = "event"
PLUGIN_KINDS = ("on_event", "export_events", "job")
TRACEBACK_CHARS = 4000


def error_text(error: BaseException) -> str:
    """`Type: message` on the first line (what lists and logs show), then the traceback's end."""
    return f"{type(error).__name__}: {error}\n" + "".join(traceback.format_exception(error))[-TRACEBACK_CHARS:]


def dead_letter(project_id: int, kind: str, error: BaseException, payload: dict, context: dict) -> DeadLetter:
    """Store plugin work that failed for good (its step is its kind)."""
    return DeadLetter.objects.create(
        project_id=project_id, kind=kind, step=kind, error=error_text(error), payload=payload, context=context
    )
