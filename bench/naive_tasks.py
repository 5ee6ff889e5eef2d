"""Bench only: the naive pipeline the real one is compared with. One Celery task per event, and
so one ClickHouse INSERT per event, running the same steps (`ingest_messages`) on the same queue.

Registered only in the bench stack's workers (bklog_app/celery.py adds this module to
TASK_MODULES when BKLOG_BENCH_TASKS=1). `python -m bench.naive_tasks` publishes the events
given on stdin (run with the stack's environment), one task each, and prints when it started.
"""

import json
import sys
import time

from bklog_app.celery import app
from pipeline.queues import Queue

NAIVE_TASK_NAME = "bklog.bench.naive_ingest_event"


@app.task(name=NAIVE_TASK_NAME, queue=Queue.INGESTION.value, acks_late=True, reject_on_worker_lost=True, bind=True)
def naive_ingest_event(self, **message) -> int:
    """Ingest the one event of this message, alone: its own batch, its own INSERT."""
    from pipeline.ingestion.batch import ingest_messages  # after Django is set up

    return ingest_messages([{**message, "id": self.request.id}]).stored


def publish(token: str, project_id: int, events: list[dict], now_iso: str) -> None:
    for event in events:
        naive_ingest_event.apply_async(
            kwargs={
                "token": token,
                "project_id": project_id,
                "events": [event],
                "ip": "127.0.0.1",
                "now": now_iso,
                "sent_at": None,
            }
        )


def main() -> None:
    spec = json.loads(sys.stdin.buffer.read())
    started = time.time()
    publish(spec["token"], spec["project_id"], spec["events"], spec["now"])
    json.dump({"started_at": started, "published_at": time.time()}, sys.stdout)


if __name__ == "__main__":
    main()
