"""What every bklog process leaves out of its memory, and what the ingestion worker holds while
it buffers messages (docs/performance.md#memory)."""

import base64
import os
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import orjson
import pytest

from pipeline.ingestion import publish
from pipeline.ingestion.message import EVENTS_HEADER, INGEST_QUEUE, INGEST_TASK_NAME, to_wire
from pipeline.redis import _client_for
from tests.factories import wait_for_events
from tests.ops.processes import wait_until

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import bklog_app, django
django.setup()
import pipeline.storage.events
from clickhouse_driver.columns.datecolumn import DateColumn
print(type(DateColumn.date_lut).__name__, len(DateColumn.date_lut))
"""


def test_the_clickhouse_driver_date_tables_are_filled_only_as_dates_are_met():
    env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_DRIVER_LASY_DATE_LUT"}
    env["DJANGO_SETTINGS_MODULE"] = "bklog_app.settings"
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    kind, size = result.stdout.split()
    assert kind == "LazyLUT"
    assert int(size) < 10  # not the 146,000 dates of 1900 to 2299 the driver builds by default


# --- The ingestion worker's main process and the messages it prefetches ------------------------

MESSAGES = 200  # INGESTION_BATCH_MESSAGES: the worker prefetches twice as many, so it may hold all
EVENTS_PER_MESSAGE = 50
# Decoded, each of these messages is about 300 KB of Python objects: the 200 of them, held at once
# by a main process that decodes what it prefetches, are 60 MB. Undecoded, a few MB.
MAIN_PROCESS_GROWTH_MB = 25


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _big_events(message: int) -> list[dict]:
    return [
        {"event": "$pageview", "distinct_id": f"mem-{message}", "uuid": str(uuid.uuid4()),
         "properties": {f"$prop_{n}": f"value {n} of event {i} in message {message}" for n in range(60)}}
        for i in range(EVENTS_PER_MESSAGE)
    ]  # fmt: skip


def _push(broker: str, kwargs: dict, events: int | None) -> str:
    message_id = str(uuid.uuid4())
    headers = {EVENTS_HEADER: events} if events is not None else None
    raw = publish.task_message(INGEST_TASK_NAME, INGEST_QUEUE, kwargs, "test", task_id=message_id, headers=headers)
    _client_for(broker).lpush(INGEST_QUEUE, raw)
    return message_id


def _request(project, events: list[dict]) -> dict:
    return to_wire([{"token": project.api_token, "project_id": project.id, "events": events, "ip": "127.0.0.1",
                     "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None}])  # fmt: skip


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_ingestion_main_process_holds_prefetched_messages_undecoded(project, servers, make_worker):
    """A worker started on a queue of MESSAGES big messages takes them all into its buffer at
    once; its main process's peak RSS grows by a fraction of what they are decoded."""
    broker = servers["redis"].url[:-1] + "5"  # a broker database of its own: no other worker
    _client_for(broker).delete(INGEST_QUEUE)
    idle = make_worker("ingestion", CELERY_BROKER_URL=broker)
    time.sleep(2)  # its consumer has started and waits on the empty queue
    at_rest_kb = _status_kb(idle.process.pid, "VmRSS")
    idle.stop()

    for message in range(MESSAGES):
        _push(broker, _request(project, _big_events(message)), EVENTS_PER_MESSAGE)
    worker = make_worker("ingestion", CELERY_BROKER_URL=broker)
    wait_for_events(project.id, MESSAGES * EVENTS_PER_MESSAGE, timeout=180)

    growth_mb = (_status_kb(worker.process.pid, "VmHWM") - at_rest_kb) / 1024
    assert growth_mb < MAIN_PROCESS_GROWTH_MB, f"grew {growth_mb:.0f} MB\n{worker.tail()}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_message_whose_body_cannot_be_decoded_is_dropped_and_its_batch_stored(project, servers, make_worker):
    broker = servers["redis"].url[:-1] + "5"
    client = _client_for(broker)
    client.delete(INGEST_QUEUE)
    good = [{"event": "e", "distinct_id": "d", "uuid": str(uuid.uuid4())}]
    _push(broker, _request(project, good), 1)
    bad_id = str(uuid.uuid4())
    envelope = orjson.loads(publish.task_message(INGEST_TASK_NAME, INGEST_QUEUE, {}, "test", task_id=bad_id))
    envelope["body"] = base64.b64encode(zlib.compress(b"[[], {not json")).decode()
    client.lpush(INGEST_QUEUE, orjson.dumps(envelope))
    worker = make_worker("ingestion", CELERY_BROKER_URL=broker)

    wait_for_events(project.id, 1)
    wait_until(lambda: client.llen(INGEST_QUEUE) == 0 and client.zcard("unacked_index") == 0, 30,
               "both messages acknowledged", worker.tail)  # fmt: skip
    [line] = [line for line in worker.log.read_text().splitlines() if "undecodable" in line]
    assert "undecodable ingestion message dropped: capture writes JSON, so look for what else publishes here" in line
    assert bad_id in line
