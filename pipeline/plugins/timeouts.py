"""A time limit on every plugin call (PLUGIN_TIMEOUT_SECONDS).

On a process's main thread (Celery prefork children, Gunicorn sync workers, tests) the limit is
an interval timer: SIGALRM interrupts anything, a busy loop or a blocking call. Elsewhere (a
thread) a trace function checks the deadline on every Python call and line, which stops plugin
code but cannot interrupt a single long C call; restricted source plugins get a `time.sleep`
that respects the deadline as well.
"""

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from pipeline.plugins.api import PluginTimeoutError

T = TypeVar("T")

# (monotonic deadline, what, seconds, setting) of the trace-limited plugin call running in this
# context, if any; on the main thread the innermost alarm-limited call is `_alarms[-1]`.
_current: ContextVar[tuple[float, str, float, str] | None] = ContextVar("plugin_call_deadline", default=None)


def _timeout_error(what: str, seconds: float, setting: str) -> PluginTimeoutError:
    return PluginTimeoutError(
        f"{what} ran past its time limit of {seconds:g} s ({setting}); make it faster, "
        "or move slow work to a job (meta.jobs)"
    )


def call_with_time_limit(
    fn: Callable[..., T], args: tuple, seconds: float, what: str, setting: str = "PLUGIN_TIMEOUT_SECONDS"
) -> T:
    """Call `fn(*args)`; raise PluginTimeoutError if it runs longer than `seconds` (the value of
    `setting`, which the error names)."""
    if seconds <= 0:
        return fn(*args)
    limit = (time.monotonic() + seconds, what, seconds, setting)  # computed once
    if _HAS_ITIMER and threading.get_ident() == threading.main_thread().ident:
        return _with_alarm(fn, args, limit)  # `_alarms` holds the limit for bounded_sleep
    token = _current.set(limit)
    try:
        return _with_trace(fn, args, limit)
    finally:
        _current.reset(token)


# Alarm-limited calls running on this process's main thread, innermost last. One SIGALRM
# handler is installed per process. The interval timer is set only when no earlier alarm is
# pending, and is left running when a call returns: a stream of short calls (a plugin chain
# over a batch) sets it about once per PLUGIN_TIMEOUT_SECONDS instead of twice per call, and
# an alarm that finds no call past its deadline just sets itself for the next one. Plugin
# processes own ITIMER_REAL; nothing else in them uses it.
_alarms: list[tuple[float, str, float, str]] = []
_armed_for: float | None = None  # when the pending alarm fires (monotonic); None: none pending
_handler_installed = False
_HAS_ITIMER = hasattr(signal, "setitimer")


def _forget_alarm_state() -> None:
    """In a forked child: no handler yet, and no timer (a child does not inherit its parent's)."""
    global _handler_installed, _armed_for
    _handler_installed = False
    _armed_for = None
    _alarms.clear()


os.register_at_fork(after_in_child=_forget_alarm_state)


def _arm(deadline: float) -> None:
    global _armed_for
    _armed_for = deadline
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))


def _on_alarm(_signum, _frame) -> Any:
    global _armed_for
    _armed_for = None
    now = time.monotonic()
    for deadline, what, seconds, setting in _alarms:  # the outermost call past its deadline ends
        if deadline <= now + 0.001:
            raise _timeout_error(what, seconds, setting)
    if _alarms:  # calls still within their limits (or the timer was early): wait for the nearest
        _arm(min(limit[0] for limit in _alarms))


def _with_alarm(fn: Callable[..., T], args: tuple, limit: tuple[float, str, float, str]) -> T:
    global _handler_installed
    if not _handler_installed:  # first call in this process (or in a forked child)
        signal.signal(signal.SIGALRM, _on_alarm)
        _handler_installed = True
    deadline = limit[0]
    _alarms.append(limit)
    if _armed_for is None or _armed_for > deadline:
        _arm(deadline)
    try:
        return fn(*args)
    finally:
        _alarms.pop()


def _with_trace(fn: Callable[..., T], args: tuple, limit: tuple[float, str, float, str]) -> T:
    deadline, what, seconds, setting = limit
    previous = sys.gettrace()

    def tracer(_frame, _event, _arg):
        if time.monotonic() > deadline:
            raise _timeout_error(what, seconds, setting)
        return tracer

    sys.settrace(tracer)
    try:
        return fn(*args)
    finally:
        sys.settrace(previous)


def bounded_sleep(seconds: float) -> None:
    """`time.sleep` for restricted plugins: a sleep past the call's deadline ends in a timeout."""
    seconds = max(float(seconds), 0.0)
    current = _current.get()
    if current is None and _alarms and threading.get_ident() == threading.main_thread().ident:
        current = _alarms[-1]
    if current is None or time.monotonic() + seconds <= current[0]:
        time.sleep(seconds)
        return
    deadline, what, limit, setting = current
    time.sleep(max(deadline - time.monotonic(), 0.0))
    raise _timeout_error(what, limit, setting)
