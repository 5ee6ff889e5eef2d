"""Suppressed distinct ids: their events are dropped at ingestion, after the timestamp step and
before the plugin chain (docs/contracts.md#ingestion-order), so that no plugin, export or table
ever sees them. They are counted, per suppression and in `bklog_events_suppressed_total`.

The database holds the suppressions (bklog_app.privacy.models.Suppression). Each worker process
keeps each project's set of suppressed ids in memory, tagged with a token read from Redis; every
change writes a new token once its transaction has committed. A batch reads the tokens of all
its projects at once (one Redis MGET per batch) and reloads the sets whose token changed from
the database (one query), so a suppression applies from the first batch that starts after it was
made. A token lost with Redis is written afresh, which makes every process reload.
"""

import uuid
from collections import Counter
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from bklog_app.privacy.models import Suppression
from pipeline.metrics import EVENTS_SUPPRESSED
from pipeline.redis import get_redis

# project id -> (token, suppressed distinct ids), per process.
_sets: dict[int, tuple[bytes, frozenset[str]]] = {}


def _token_key(project_id: int) -> str:
    return f"bklog:suppressions:{project_id}:token"


def changed(project_id: int) -> None:
    """Call after adding or lifting a suppression: processes reload the project's set once the
    transaction commits (at once, outside one)."""
    transaction.on_commit(lambda: get_redis().set(_token_key(project_id), uuid.uuid4().hex))


def suppressed_ids(project_id: int) -> frozenset[str]:
    """The project's suppressed distinct ids, as of now."""
    redis = get_redis()
    token = redis.get(_token_key(project_id))
    if token is None:
        redis.set(_token_key(project_id), uuid.uuid4().hex, nx=True)
        token = redis.get(_token_key(project_id))
    cached = _sets.get(project_id)
    if cached is not None and cached[0] == token:
        return cached[1]
    ids = frozenset(
        Suppression.objects.filter(project_id=project_id, lifted_at__isnull=True).values_list("distinct_id", flat=True)
    )
    _sets[project_id] = (token, ids)
    return ids


def suppressed_ids_of(project_ids: list[int]) -> dict[int, frozenset[str]]:
    """`suppressed_ids` for many projects: their tokens in one Redis round trip (two more when
    some have none yet) and one query for the sets whose token changed."""
    if not project_ids:
        return {}
    redis = get_redis()
    keys = [_token_key(project_id) for project_id in project_ids]
    tokens = redis.mget(keys)
    if None in tokens:
        pipe = redis.pipeline(transaction=False)
        for key, token in zip(keys, tokens, strict=True):
            if token is None:
                pipe.set(key, uuid.uuid4().hex, nx=True)
        pipe.execute()
        tokens = redis.mget(keys)
    stale = {
        project_id: token
        for project_id, token in zip(project_ids, tokens, strict=True)
        if _sets.get(project_id, (None,))[0] != token
    }
    if stale:
        ids: dict[int, set[str]] = {project_id: set() for project_id in stale}
        rows = Suppression.objects.filter(project_id__in=sorted(stale), lifted_at__isnull=True)
        for project_id, distinct_id in rows.values_list("project_id", "distinct_id"):
            ids[project_id].add(distinct_id)
        for project_id, token in stale.items():
            _sets[project_id] = (token, frozenset(ids[project_id]))
    return {project_id: _sets[project_id][1] for project_id in project_ids}


class SuppressionCheck:
    """One ingestion batch's view of the suppressions: `drops` per event, `save` once at the end."""

    def __init__(self) -> None:
        self._sets: dict[int, frozenset[str]] = {}
        self.dropped: Counter[tuple[int, str]] = Counter()

    def load(self, project_ids: Iterable[int]) -> None:
        """Read the suppressions of the batch's projects at once, before its events."""
        self._sets.update(suppressed_ids_of(sorted(set(project_ids))))

    def drops(self, project_id: int, distinct_id: object) -> bool:
        if distinct_id is None:  # not an event yet: a later step dead-letters it
            return False
        ids = self._sets.get(project_id)
        if ids is None:
            ids = self._sets[project_id] = suppressed_ids(project_id)
        if ids and str(distinct_id) in ids:
            self.dropped[(project_id, str(distinct_id))] += 1
            return True
        return False

    def save(self) -> None:
        """Add this batch's drops to the suppressions' counts (only once the batch got through: a
        batch retried after an outage counts its events once)."""
        if not self.dropped:
            return
        now = timezone.now()
        for (project_id, distinct_id), count in self.dropped.items():
            Suppression.objects.filter(project_id=project_id, distinct_id=distinct_id, lifted_at__isnull=True).update(
                events_dropped=F("events_dropped") + count, last_dropped_at=now
            )
        EVENTS_SUPPRESSED.inc(sum(self.dropped.values()))
        self.dropped.clear()
