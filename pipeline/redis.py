"""The shared Redis connection pool (broker aside): dedup keys, locks, caches, pub/sub."""

from functools import lru_cache

import redis
from django.conf import settings

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError)


@lru_cache(maxsize=4)
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=5,
        socket_connect_timeout=3,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def get_redis() -> redis.Redis:
    return _client_for(settings.REDIS_URL)
