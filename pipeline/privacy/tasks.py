"""Celery task of the deletions: one project's requests, on `async_export` (long ClickHouse
work, like exports; kept off `default`, whose plugin calls are latency-bound). A Redis lock per
project keeps two runs from issuing the same mutation; the run queues its next one while a
mutation is under way."""

from pipeline.celery_tasks import task
from pipeline.locks import held
from pipeline.privacy import deletion
from pipeline.queues import TaskName

RUN_TIME_LIMIT = 600


@task(TaskName.RUN_DELETIONS, time_limit=RUN_TIME_LIMIT)
def run_deletions(project_id: int) -> None:
    again = None
    with held(f"privacy:deletions:{project_id}", ttl=RUN_TIME_LIMIT) as acquired:
        # Another run holds the project: look again shortly, for the requests it may have missed.
        again = deletion.run_deletions(project_id) if acquired else deletion.POLL_SECONDS
    if again is not None:
        run_deletions.apply_async(args=[project_id], countdown=again)
