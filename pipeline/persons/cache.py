"""A bounded, per-process distinct_id -> person cache that is validated before every use.

Design. Each worker process keeps the last DISTINCT_ID_LRU_SIZE distinct ids it saw, each with
the person (uuid, properties, flags, `version`) as committed. Nothing is ever trusted blindly:
before a batch uses cached entries, one query reads the current `version` of the cached persons
(`SELECT uuid, version ... WHERE uuid IN (...)`, primary-key lookups, no JSON transferred).
An entry whose person is gone, or whose version moved, is dropped and loaded again with the
batch's uncached ids. This is exact across processes, with no message to lose, because of two
rules the writers keep (see bklog_app/persons/models.py):

- every committed change to a person increments its `version`;
- a distinct id leaves a person only when that person is deleted (merged away, or deleted
  through the API).

So "person still there with the version we cached" means "same properties and the distinct id
still belongs to it": a merged-away or deleted person is never served. A cached entry can only
be as stale as a read made at the start of the batch, and every person the batch then writes is
locked and version-checked again at write time (pipeline/persons/store.py).

Entries are recorded only after the batch's transaction commits; uncommitted state never
enters the cache.
"""

import threading
from collections import OrderedDict
from collections.abc import Iterable

from django.conf import settings

from pipeline.persons.state import StoredPerson


class DistinctIdCache:
    def __init__(self, max_size: int):
        self.max_size = max(0, max_size)
        self._entries: OrderedDict[tuple[int, str], StoredPerson] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, project_id: int, distinct_ids: Iterable[str]) -> dict[str, StoredPerson]:
        """Cached entries for these ids (unvalidated); each hit becomes most recently used."""
        found = {}
        with self._lock:
            for distinct_id in distinct_ids:
                key = (project_id, distinct_id)
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    found[distinct_id] = entry
        return found

    def put_many(self, project_id: int, entries: dict[str, StoredPerson]) -> None:
        if self.max_size == 0:
            return
        with self._lock:
            for distinct_id, person in entries.items():
                key = (project_id, distinct_id)
                self._entries[key] = person
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)

    def discard(self, project_id: int, distinct_ids: Iterable[str]) -> None:
        with self._lock:
            for distinct_id in distinct_ids:
                self._entries.pop((project_id, distinct_id), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache: DistinctIdCache | None = None
_cache_lock = threading.Lock()


def get_cache() -> DistinctIdCache:
    """This process's cache, sized by DISTINCT_ID_LRU_SIZE when first used."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = DistinctIdCache(settings.DISTINCT_ID_LRU_SIZE)
        return _cache
