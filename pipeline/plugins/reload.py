"""Reload over Redis pub/sub (PLUGINS_RELOAD_PUBSUB_CHANNEL).

Any change to a plugin, its files, a config or an attachment publishes one message naming what
changed. Every process that uses plugins listens on a daemon thread, started on first use (and
again after a fork), subscribed before the process reads any plugin row, so no change slips
between reading and listening. On a message it drops its project caches and tears down the
instances that changed; they are rebuilt on next use. After a lost connection it drops every
cache, since messages may have been missed.

What a message does is up to whoever keeps the caches: the registry hands its `forget` to
`on_reload`, so that this module, which the registry uses, needs nothing of it.
"""

import json
import os
import threading
import time
from collections.abc import Callable

import redis
import structlog
from django.conf import settings

from pipeline.redis import connect, get_redis

logger = structlog.get_logger(__name__)

_state = {"pid": None, "thread": None}
_start_lock = threading.Lock()
_handlers: list[Callable[[dict], None]] = []


def on_reload(handler: Callable[[dict], None]) -> None:
    """Call `handler(message)` for every reload message this process publishes or receives;
    `{"everything": True}` after the listener lost Redis."""
    _handlers.append(handler)


def publish_reload(
    *, plugin_id: int | None = None, plugin_config_id: int | None = None, project_id: int | None = None
) -> None:
    """Tell every worker that this plugin (or config) changed. Never raises: a missed message
    is caught up by PLUGIN_CHAIN_CACHE_SECONDS."""
    message = {"plugin_id": plugin_id, "plugin_config_id": plugin_config_id, "project_id": project_id}
    try:
        get_redis().publish(settings.PLUGINS_RELOAD_PUBSUB_CHANNEL, json.dumps(message))
    except redis.RedisError as exc:
        logger.warning(
            "could not publish a plugin reload; workers catch up within PLUGIN_CHAIN_CACHE_SECONDS",
            error=str(exc),
            **message,
        )
    # This process reloads at once, listener or not.
    _apply(message)


def ensure_listening() -> None:
    """Start this process's listener if it is not running (cheap when it is)."""
    if _state["pid"] == os.getpid():
        return
    with _start_lock:
        if _state["pid"] == os.getpid():
            return
        pubsub = _subscribe()
        thread = threading.Thread(target=_listen, args=(pubsub,), name="plugin-reload-listener", daemon=True)
        thread.start()
        _state.update(pid=os.getpid(), thread=thread)


def _client() -> redis.Redis:
    # A connection of its own, with no read timeout: it blocks waiting for messages.
    return connect(settings.REDIS_URL, socket_timeout=None)


def _subscribe() -> "redis.client.PubSub":
    pubsub = _client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(settings.PLUGINS_RELOAD_PUBSUB_CHANNEL)
    # Wait for Redis to confirm: from here on no message to this channel is missed.
    deadline = time.monotonic() + 5
    while pubsub.connection is not None and not pubsub.subscribed and time.monotonic() < deadline:
        pubsub.get_message(timeout=0.1)
    if not pubsub.subscribed:
        pubsub.get_message(timeout=1.0)
    return pubsub


def _listen(pubsub) -> None:
    pid = os.getpid()
    delay = 0.5
    while _state["pid"] in (pid, None):
        try:
            message = pubsub.get_message(timeout=5.0)
            delay = 0.5
            if message and message.get("type") == "message":
                _apply(json.loads(message["data"]))
        except (redis.RedisError, OSError) as exc:
            logger.warning("plugin reload listener lost Redis; reconnecting", error=str(exc), retry_in=delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
            try:
                pubsub = _subscribe()
                _apply({"everything": True})
            except (redis.RedisError, OSError):
                continue
        except Exception:
            logger.exception("plugin reload message failed; the caches expire within PLUGIN_CHAIN_CACHE_SECONDS")


def _apply(message: dict) -> None:
    for handler in _handlers:
        handler(message)
