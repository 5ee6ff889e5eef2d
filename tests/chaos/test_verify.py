"""The pure pieces of the fault suite: the comparison, the 5xx windows, the plugin selection."""

import uuid

from chaos import report
from chaos.selection import raises_on, times_out_on
from chaos.verify import compare, unexpected_server_errors


def test_compare_counts_stored_dead_lettered_lost_and_duplicated():
    result = compare(
        accepted=["a", "b", "c", "d", "e"],
        stored_counts={"a": 1, "b": 2, "x": 3},
        dead_letters={"c": "plugins: boom", "d": "  "},
    )
    assert (result.accepted, result.stored, result.dead_lettered) == (5, 2, 1)
    assert result.lost == ["d", "e"]  # a dead letter without a reason does not count
    assert result.duplicated == ["b", "x"]


def test_only_503_inside_an_outage_window_is_expected():
    outcomes = [(10.0, 10.1, 503), (20.0, 20.1, 503), (10.5, 10.6, 500), (30.0, 30.1, 200), (31.0, 31.1, 502)]
    bad = unexpected_server_errors(outcomes, [(9.0, 12.0)], grace=1.0)
    assert bad == [(20.1, 503), (10.6, 500), (31.1, 502)]


def test_plugin_selection_is_about_one_percent_and_disjoint():
    uuids = [str(uuid.UUID(int=n)) for n in range(10_000)]
    raised = [u for u in uuids if raises_on(u)]
    timed_out = [u for u in uuids if times_out_on(u)]
    assert len(raised) == 100 and len(timed_out) == 20
    assert not set(raised) & set(timed_out)
    assert not raises_on("not-a-uuid")


def test_failures_name_every_broken_promise():
    result = {
        "accepted": 10,
        "lost": 1,
        "duplicated": 0,
        "unexpected_5xx": 0,
        "stuck": [],
        "faults": {"redis": 3.0, "clickhouse": None},
        "examples": {"lost": ["u1"], "duplicated": []},
    }
    problems = report.failures(result)
    assert any("lost" in p for p in problems) and any("clickhouse" in p for p in problems)
