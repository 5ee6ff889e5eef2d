"""A time limit on every plugin call (PLUGIN_TIMEOUT_SECONDS).

On a process's main thread (Celery prefork children, Gunicorn sync workers, tests) the limit is
an interval timer: SIGALRM interrupts anything, a busy loop or a blocking call. Elsewhere (a
thread) a trace function checks the deadline on every Python call and line, which stops plugin
code but cannot interrupt a single long C call; restricted source plugins get a `time.sleep`
that respects the deadline as well.
"""

import signal
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from pipeline.plugins.api import PluginTimeoutError

T = TypeVar("T")

# (monotonic deadline, what, seconds) of the plugin call running in this context, if any.
_current: ContextVar[tuple[float, str, float] | None] = ContextVar("plugin_call_deadline", default=None)


def _timeout_error(what: str, seconds: float) -> PluginTimeoutError:
    return PluginTimeoutError(
        f"{what} ran past its time limit of {seconds:g} s (PLUGIN_TIMEOUT_SECONDS); make it faster, "
        "or move slow work to a job (meta.jobs)"
    )


def call_with_time_limit(fn: Callable[..., T], args: tuple, seconds: float, what: str) -> T:
    """Call `fn(*args)`; raise PluginTimeoutError if it runs longer than `seconds`."""
    if seconds <= 0:
        return fn(*args)
    token = _current.set((time.monotonic() + seconds, what, seconds))
    try:
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            return _with_alarm(fn, args, seconds, what)
        return _with_trace(fn, args, seconds, what)
    finally:
        _current.reset(token)


def _with_alarm(fn: Callable[..., T], args: tuple, seconds: float, what: str) -> T:
    def on_alarm(_signum, _frame) -> Any:
        raise _timeout_error(what, seconds)

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            # An outer timer was running: give it back what is left of it.
            signal.setitimer(signal.ITIMER_REAL, max(previous_delay - (time.monotonic() - started), 0.001))


def _with_trace(fn: Callable[..., T], args: tuple, seconds: float, what: str) -> T:
    deadline = time.monotonic() + seconds
    previous = sys.gettrace()

    def tracer(_frame, _event, _arg):
        if time.monotonic() > deadline:
            raise _timeout_error(what, seconds)
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
    if current is None or time.monotonic() + seconds <= current[0]:
        time.sleep(seconds)
        return
    deadline, what, limit = current
    time.sleep(max(deadline - time.monotonic(), 0.0))
    raise _timeout_error(what, limit)
