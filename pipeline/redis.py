"""Redis clients (the broker's own aside): dedup keys, locks, caches, pub/sub, the capture push.

A URL is either one server, `redis://host:port/db`, or the Sentinels that watch a replicated
Redis, `sentinel://host:port;sentinel://host:port/db` (the form kombu's Sentinel transport reads
for CELERY_BROKER_URL), with REDIS_SENTINEL_MASTER naming the master. A Sentinel client asks the
Sentinels where the master is whenever its connection fails, so it follows a failover without a
restart: the command that met the dead master fails (an outage: callers retry), the next goes to
the new one. Lua scripts are sent again where the new master does not know them (redis-py's
`Script` does that on NOSCRIPT).
"""

from functools import lru_cache
from urllib.parse import urlsplit

import redis
from django.conf import settings
from redis.sentinel import MasterNotFoundError, Sentinel

REDIS_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.ReadOnlyError,
    MasterNotFoundError,
)

_CLIENT_OPTIONS = {
    "socket_timeout": 5,
    "socket_connect_timeout": 3,
    "health_check_interval": 30,
    "retry_on_timeout": False,
}


def is_sentinel_url(url: str) -> bool:
    return url.startswith("sentinel://")


def sentinel_addresses(url: str) -> tuple[list[tuple[str, int]], int]:
    """([(host, port) of each Sentinel], db) of a `sentinel://h:p;sentinel://h:p/db` URL."""
    addresses, db = [], 0
    for part in url.split(";"):
        split = urlsplit(part.strip())
        addresses.append((split.hostname or "127.0.0.1", split.port or 26379))
        if split.path.strip("/"):
            db = int(split.path.strip("/"))
    return addresses, db


def connect(url: str, **options) -> redis.Redis:
    """A new client of the server, or of the Sentinels' current master, at `url`; `options`
    (redis-py's) override the defaults, e.g. `socket_timeout=None` for a blocking reader."""
    options = {**_CLIENT_OPTIONS, "socket_timeout": socket_timeout(), **options}
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    addresses, db = sentinel_addresses(url)
    sentinel = Sentinel(addresses, socket_timeout=1, socket_connect_timeout=1)
    return sentinel.master_for(settings.REDIS_SENTINEL_MASTER, db=db, **options)


def socket_timeout() -> float:
    """How long a command may wait for its reply: 5 s, or longer than capture's replication WAIT
    (REDIS_WAIT_TIMEOUT_MS) when that is longer, so that a WAIT which runs out answers as one
    (capture's 503 that says the replicas did not confirm) instead of as a dead connection."""
    return max(_CLIENT_OPTIONS["socket_timeout"], settings.REDIS_WAIT_TIMEOUT_MS / 1000 + 1)


@lru_cache(maxsize=4)
def _client_for(url: str) -> redis.Redis:
    return connect(url)


def get_redis() -> redis.Redis:
    return _client_for(settings.REDIS_URL)
