"""The Redis clients' socket timeout (pipeline/redis.py): longer than capture's replication WAIT."""

from pipeline.redis import connect, socket_timeout


def test_a_command_waits_five_seconds_or_past_the_replication_wait(settings):
    settings.REDIS_WAIT_TIMEOUT_MS = 500
    assert socket_timeout() == 5
    settings.REDIS_WAIT_TIMEOUT_MS = 8_000
    assert socket_timeout() == 9
    client = connect("redis://127.0.0.1:1/0")  # no connection is opened
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 9


def test_a_caller_can_still_ask_for_its_own_timeout(settings):
    settings.REDIS_WAIT_TIMEOUT_MS = 8_000
    client = connect("redis://127.0.0.1:1/0", socket_timeout=None)  # a blocking reader
    assert client.connection_pool.connection_kwargs["socket_timeout"] is None
