"""Per-process caches keyed by project or token stay bounded without forgetting everything at once.

A cache that is emptied whenever it passes its bound thrashes once a deployment has more live
keys than the bound: at 10,000 projects sending, a bound of 10,000 tokens emptied the cache of
every web and ingestion process every few seconds, and each emptying cost a database query per
project again. `trim` drops only the oldest entries (a dict keeps insertion order; callers that
refresh an entry re-insert it), and a quarter below the bound, so trims are rare.
"""

from itertools import islice

ENTRIES = 50_000  # about 20 MB at most for the projects' cache: a deployment far larger than 10,000 projects


def trim(cache: dict, limit: int | None = None) -> None:
    """Drop the oldest entries of `cache` once it holds more than `limit` (default ENTRIES), down
    to 3/4 of it."""
    limit = ENTRIES if limit is None else limit
    if len(cache) > limit:
        for key in list(islice(cache, len(cache) - limit * 3 // 4)):
            cache.pop(key, None)
