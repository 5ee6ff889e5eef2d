"""Replaying a dead letter, whatever kind of work it holds, as a first attempt."""

from django.utils import timezone

from bklog_app.models import DeadLetter
from pipeline.celery_tasks import send
from pipeline.deadletters.record import EVENT_KIND, PLUGIN_KINDS
from pipeline.ingestion.replay import replay_event
from pipeline.plugins import export_buffer, job_queue
from pipeline.queues import TaskName


def replay(letter: DeadLetter) -> bool:
    """Queue the letter's work again; False if it was not queued.

    An event goes back through ingestion, every time it is asked (dedup by uuid stores it once).
    Plugin work goes to its plugin config once: False when it was replayed already.
    """
    if letter.kind == EVENT_KIND:
        replay_event(letter)
        return True
    claimed = DeadLetter.objects.filter(pk=letter.pk, kind__in=PLUGIN_KINDS, replayed_at__isnull=True).update(
        replayed_at=timezone.now()
    )
    if not claimed:
        return False
    config_id = int(letter.context["plugin_config_id"])
    if letter.kind == "on_event":
        send(TaskName.PLUGIN_ON_EVENT, config_id, letter.payload["events"], 1)
    elif letter.kind == "export_events":
        export_buffer.export_now(config_id, letter.payload["events"])
    else:
        job_queue.schedule_job(config_id, letter.payload["name"], letter.payload.get("payload") or {}, timezone.now())
    return True
