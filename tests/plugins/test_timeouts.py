"""Plugin time limits (pipeline/plugins/timeouts.py): the interval timer is left running between
calls, so these check that a call past its limit still ends however many short calls came
before it, that nested limits end the right call, and that an alarm with no call running is
harmless."""

import threading
import time

import pytest

from pipeline.plugins.api import PluginTimeoutError
from pipeline.plugins.timeouts import bounded_sleep, call_with_time_limit


def spin(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "finished"


def test_a_busy_loop_past_its_limit_ends():
    with pytest.raises(PluginTimeoutError, match=r"busy ran past its time limit of 0\.2 s"):
        call_with_time_limit(spin, (30,), 0.2, "busy")


def test_a_call_after_many_short_ones_still_ends_at_its_limit():
    for _ in range(2_000):
        assert call_with_time_limit(len, ("abc",), 0.3, "short") == 3
    with pytest.raises(PluginTimeoutError, match="slow ran past"):
        call_with_time_limit(spin, (30,), 0.3, "slow")


def test_a_blocking_call_past_its_limit_ends():
    with pytest.raises(PluginTimeoutError, match="sleeper"):
        call_with_time_limit(time.sleep, (30,), 0.2, "sleeper")


def test_nested_limits_end_the_call_whose_limit_passed():
    def outer_then_inner(inner_seconds: float) -> str:
        return call_with_time_limit(spin, (30,), inner_seconds, "inner")

    with pytest.raises(PluginTimeoutError, match="inner ran past"):
        call_with_time_limit(outer_then_inner, (0.2,), 5, "outer")
    with pytest.raises(PluginTimeoutError, match="outer ran past"):
        call_with_time_limit(outer_then_inner, (5,), 0.2, "outer")


def test_an_alarm_after_the_calls_returned_is_harmless():
    assert call_with_time_limit(len, ("ab",), 0.05, "quick") == 2
    time.sleep(0.3)  # the timer set for "quick" fires here, with no call running
    assert call_with_time_limit(spin, (0.01,), 5, "after") == "finished"


def test_a_call_on_another_thread_is_limited_too():
    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            outcome.append(call_with_time_limit(spin, (30,), 0.2, "threaded"))
        except PluginTimeoutError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(20)
    assert len(outcome) == 1 and isinstance(outcome[0], PluginTimeoutError)


@pytest.mark.parametrize("on_thread", [False, True])
def test_a_restricted_plugins_sleep_past_its_limit_ends(on_thread):
    """bounded_sleep (the `time.sleep` of restricted plugins) finds the running call's limit on
    the main thread (the alarm's list) and on any other (where a trace cannot interrupt a C
    sleep): a 30 s sleep in a call limited to 0.2 s ends in the call's timeout."""
    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            outcome.append(call_with_time_limit(bounded_sleep, (30,), 0.2, "napper"))
        except PluginTimeoutError as exc:
            outcome.append(exc)

    if on_thread:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(20)
    else:
        run()
    assert len(outcome) == 1 and isinstance(outcome[0], PluginTimeoutError), outcome
    assert "napper ran past" in str(outcome[0])
    assert call_with_time_limit(bounded_sleep, (0.01,), 5, "short nap") is None
