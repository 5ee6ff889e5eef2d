"""Health endpoints (docs/contracts.md#operations).

/_health: the process answers (no dependency is called). /health: {"status": "ok"}.
/health/ready: 200 or 503 with a check per dependency and the ingestion staleness rule.
"""

import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from pipeline.ingestion.status import last_ingested_at, queue_depth
from pipeline.queues import Queue
from pipeline.redis import get_redis
from pipeline.storage.clickhouse import execute as clickhouse_execute


def liveness(request):
    return JsonResponse({"status": "ok"})


def health(request):
    return JsonResponse({"status": "ok"})


def readiness(request):
    checks = {
        "database": _check(_database),
        "redis": _check(_redis),
        "clickhouse": _check(_clickhouse),
        "ingestion": _check(_ingestion),
    }
    ok = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ok else "error", "checks": checks}, status=200 if ok else 503)


def _check(probe) -> str:
    try:
        return "ok" if probe() else "error"
    except Exception:
        return "error"


def _database() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0] == 1


def _redis() -> bool:
    return bool(get_redis().ping())


def _clickhouse() -> bool:
    return clickhouse_execute("SELECT 1")[0][0] == 1


def _ingestion() -> bool:
    """Stale only when events are waiting and nothing was ingested for the allowed time."""
    if queue_depth(Queue.INGESTION) == 0:
        return True
    last = last_ingested_at()
    return last is not None and time.time() - last < settings.HEALTHCHECK_MAX_STALE_SECONDS
