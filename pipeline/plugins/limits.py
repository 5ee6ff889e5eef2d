"""Limits on plugin code (docs/plugins.md#limits): time, memory and recursion depth.

Every plugin call goes through `call_within_limits` (or a `RecursionHeadroom` shared by a series of
calls, registry.PluginCalls): the time limit of pipeline/plugins/timeouts.py and a recursion limit
scoped to the call (PLUGIN_RECURSION_LIMIT frames over the caller's depth).
Log volume is limited where log lines are gathered (pipeline/plugins/logs.py).

Memory is limited per worker pool process, not per call: `limit_memory` caps the process's address
space (RLIMIT_AS) at what it uses when it starts plus PLUGIN_MEMORY_LIMIT_MB. An allocation past the
cap fails at once, and Python raises MemoryError inside the plugin call that asked for it; the call
wrapper records it as the plugin's error, the allocation is never made and the process carries on.
Setting the cap per call would cost two system calls and a read of /proc on every event; a
process-wide cap costs nothing per call and is as good a guard, since a pool process runs one
plugin call at a time.
"""

import resource
import sys
from collections.abc import Callable
from typing import TypeVar

import structlog
from django.conf import settings

from pipeline import hot_settings
from pipeline.plugins.timeouts import call_with_time_limit

T = TypeVar("T")

logger = structlog.get_logger(__name__)

MEGABYTE = 1024 * 1024


def call_within_limits(
    fn: Callable[..., T], args: tuple, seconds: float, what: str, setting: str = "PLUGIN_TIMEOUT_SECONDS"
) -> T:
    """Call `fn(*args)` under the time limit `seconds` (the value of `setting`) and
    PLUGIN_RECURSION_LIMIT: past either, PluginTimeoutError or RecursionError is raised out of the
    plugin's code."""
    with RecursionHeadroom():
        return call_with_time_limit(fn, args, seconds, what, setting)


class RecursionHeadroom:
    """PLUGIN_RECURSION_LIMIT frames over the depth it is entered at, until it exits; none when
    the setting is 0. Plugin calls made one after another from one frame (a chain over one event,
    registry.PluginCalls) share one: the limit is set and restored once for all of them."""

    __slots__ = ("previous",)

    def __enter__(self) -> "RecursionHeadroom":
        headroom = hot_settings.get("PLUGIN_RECURSION_LIMIT")
        self.previous = None
        if headroom > 0:
            self.previous = sys.getrecursionlimit()
            sys.setrecursionlimit(_depth() + headroom)
        return self

    def __exit__(self, *_exc) -> None:
        if self.previous is not None:
            sys.setrecursionlimit(self.previous)


_last_depth = 0  # the depth found last: plugin calls come from a few places, at a few depths


def _depth() -> int:
    """The caller's stack depth. Walking the stack in Python costs about 2 us at a Celery
    worker's depth of some 40 frames, most of a plugin call's overhead; `sys._getframe(n)` walks
    in C, so the last depth found is checked first (the frame that deep is the stack's bottom)."""
    global _last_depth
    guess = _last_depth
    if guess:
        try:
            if sys._getframe(guess).f_back is None:
                return guess
        except ValueError:  # the stack is shallower than that
            pass
    frame, depth = sys._getframe(1), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    _last_depth = depth
    return depth


def address_space_in_use() -> int:
    """Bytes of address space this process has mapped (VmSize)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def limit_memory(megabytes: int | None = None) -> int | None:
    """Cap this process's address space at its current size plus `megabytes` (default
    PLUGIN_MEMORY_LIMIT_MB); returns the cap in bytes, or None when there is none to set."""
    megabytes = settings.PLUGIN_MEMORY_LIMIT_MB if megabytes is None else megabytes
    if megabytes <= 0:
        return None
    try:
        cap = address_space_in_use() + megabytes * MEGABYTE
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError) as exc:  # no /proc (not Linux), or a hard limit below what is used
        logger.warning("plugin memory limit not set", error=str(exc))
        return None
    logger.info("plugin memory limit set", address_space_mb=cap // MEGABYTE, headroom_mb=megabytes)
    return cap
