"""list_events reads a page window by window, newest day first: whatever the windows, a page is
exactly what one query over the whole range gives (order, cursor, filters, bounds)."""

import itertools
import random
import time
import uuid

import pytest

from pipeline.storage import events as event_store
from pipeline.storage.events import DAY_MS, WIDEN_UP_TO_DAYS, EventRow, insert_events, list_events, next_window_days

NOW_MS = 1_796_300_000_000  # 2026-12-03T11:33:20Z
HOUR_MS = 3_600_000


def stored(team_id: int, spec: list[tuple[int, str, str]]) -> list[dict]:
    """Insert events (timestamp_ms, event, distinct_id); return them as the reference sees them,
    newest first by (timestamp, uuid as text)."""
    rows = [
        EventRow(uuid=uuid.uuid4(), team_id=team_id, event=name, distinct_id=distinct_id, properties={"n": n},
                 timestamp_ms=ms, created_at_ms=ms, person_id=uuid.UUID(int=0), person_properties={},
                 elements_chain="")
        for n, (ms, name, distinct_id) in enumerate(spec)
    ]  # fmt: skip
    insert_events(rows)
    reference = [
        {"uuid": str(r.uuid), "timestamp_ms": r.timestamp_ms, "event": r.event, "distinct_id": r.distinct_id}
        for r in rows
    ]
    return sorted(reference, key=lambda r: (r["timestamp_ms"], r["uuid"]), reverse=True)


def expected(reference, *, event="", distinct_id="", after_ms=0, before_ms=2**62, cursor=None, limit=100):
    def keep(r):
        return (
            (not event or r["event"] == event)
            and (not distinct_id or r["distinct_id"] == distinct_id)
            and after_ms <= r["timestamp_ms"] < before_ms
            and (cursor is None or (r["timestamp_ms"], r["uuid"]) < cursor)
        )

    return [r["uuid"] for r in reference if keep(r)][:limit]


def uuids(rows: list[dict]) -> list[str]:
    return [r["uuid"] for r in rows]


@pytest.fixture
def team_id() -> int:
    return random.randrange(10**9, 2 * 10**9)


@pytest.fixture
def reads(monkeypatch) -> list[dict]:
    """The parameters of every page query sent (the real ClickHouse still answers them)."""
    seen: list[dict] = []
    real_execute = event_store.execute

    def recording(sql, params=None, **kwargs):
        if sql in event_store.LIST_EVENTS_FILTERED.values():
            seen.append(params)
        return real_execute(sql, params, **kwargs)

    monkeypatch.setattr(event_store, "execute", recording)
    return seen


def test_sparse_old_events_are_found_past_every_window(team_id):
    # Today, yesterday, last week, 40 days and 3 years back, and 20 h ahead (a sender's clock).
    spec = [
        (NOW_MS + 20 * HOUR_MS, "e", "a"),
        (NOW_MS - HOUR_MS, "e", "a"),
        (NOW_MS - DAY_MS, "e", "b"),
        (NOW_MS - 7 * DAY_MS, "other", "a"),
        (NOW_MS - 40 * DAY_MS, "e", "a"),
        (NOW_MS - 3 * 365 * DAY_MS, "e", "b"),
    ]
    reference = stored(team_id, spec)
    assert uuids(list_events(team_id, now_ms=NOW_MS)) == expected(reference)
    assert len(list_events(team_id, now_ms=NOW_MS)) == 6
    assert uuids(list_events(team_id, event="e", distinct_id="b", now_ms=NOW_MS)) == expected(
        reference, event="e", distinct_id="b"
    )


def test_cursor_pages_cross_the_windows_in_order(team_id):
    # Several events share a millisecond, so the uuid decides between them across page ends.
    spec = [(NOW_MS - d * DAY_MS - (i % 3), "e", f"u{i % 4}") for d in (0, 0, 1, 2, 5, 9, 30, 120) for i in range(4)]
    reference = stored(team_id, spec)
    for limit in (1, 3, 7):
        seen, cursor = [], None
        while True:
            page = list_events(team_id, cursor=cursor, limit=limit + 1, now_ms=NOW_MS)
            seen += uuids(page[:limit])
            if len(page) <= limit:
                break
            cursor = (page[limit - 1]["timestamp_ms"], page[limit - 1]["uuid"])
        assert seen == expected(reference, limit=10**6)


def test_any_range_cursor_filter_and_clock_gives_the_single_query_page(team_id):
    rng = random.Random(23)
    spec = [
        (NOW_MS - rng.choice([0, 1, 2, 3, 6, 15, 50, 99, 101, 400]) * DAY_MS - rng.randrange(DAY_MS),
         rng.choice(["e", "f"]), rng.choice(["a", "b", "c"]))
        for _ in range(300)
    ]  # fmt: skip
    reference = stored(team_id, spec)
    times = sorted(r["timestamp_ms"] for r in reference)
    for _ in range(150):
        query = {
            "event": rng.choice(["", "e"]),
            "distinct_id": rng.choice(["", "", "b"]),
            "after_ms": rng.choice([0, rng.choice(times)]),
            "before_ms": rng.choice([2**62, rng.choice(times) + 1]),
            "limit": rng.choice([1, 5, 40, 1000]),
        }
        if rng.random() < 0.5:
            pick = rng.choice(reference)
            query["cursor"] = (pick["timestamp_ms"], pick["uuid"])
        # The clock may be ahead of every event, among them, or behind them all.
        now_ms = rng.choice([NOW_MS, rng.choice(times), times[0] - 5 * DAY_MS])
        assert uuids(list_events(team_id, now_ms=now_ms, **query)) == expected(reference, **query), query


def test_a_full_first_page_reads_only_the_newest_day(team_id, reads):
    spec = [(NOW_MS - d * DAY_MS - i, "e", "a") for d in range(10) for i in range(5)]
    reference = stored(team_id, spec)
    assert uuids(list_events(team_id, limit=5, now_ms=NOW_MS)) == expected(reference, limit=5)
    assert len(reads) == 1
    today = NOW_MS // DAY_MS * DAY_MS
    assert (reads[0]["after_ms"], reads[0]["before_ms"]) == (today, 2**62)


def test_a_short_page_widens_back_to_the_start_of_the_range(team_id, reads):
    reference = stored(team_id, [(NOW_MS - 2 * DAY_MS, "e", "a"), (NOW_MS - 1000 * DAY_MS, "e", "a")])
    assert uuids(list_events(team_id, now_ms=NOW_MS)) == expected(reference)
    windows = [(r["after_ms"], r["before_ms"]) for r in reads]
    assert windows[0][1] == 2**62 and windows[-1][0] == 0
    assert all(newer[0] == older[1] for newer, older in itertools.pairwise(windows))
    assert len(windows) <= 4


def test_a_window_beyond_clickhouse_18s_last_day_still_reads_today(team_id):
    """18.16 gives 0000-00-00 as the day of a time past 2105: the newest window's key bound is
    clamped, or a page with no `before` would miss today's events."""
    now_ms = int(time.time() * 1000)
    reference = stored(team_id, [(now_ms, "e", "a"), (now_ms - DAY_MS, "e", "a")])
    assert uuids(list_events(team_id, event="e")) == expected(reference)
    assert uuids(list_events(team_id, before_ms=2**62 - 1)) == expected(reference)


def test_an_empty_range_sends_no_query(team_id, reads):
    assert list_events(team_id, after_ms=5, before_ms=5) == []
    assert list_events(team_id, after_ms=10, cursor=(5, "~")) == []
    assert reads == []


@pytest.mark.parametrize(
    ("days_read", "found", "wanted", "days"),
    [
        (1, 0, 101, 7),  # nothing yet: eight times as far back
        (8, 0, 101, 56),
        (1, 20, 81, 7),  # 20 a day, 81 wanted: 1.5 x 81 / 20 = 6.1, so 7 days more
        (1, 100, 1, 1),  # one row short: at least twice as far back
        (50, 100, 1, WIDEN_UP_TO_DAYS),  # past the limit: everything older
        (13, 0, 101, WIDEN_UP_TO_DAYS),
    ],
)
def test_next_window_days(days_read, found, wanted, days):
    result = next_window_days(days_read, found, wanted)
    if days == WIDEN_UP_TO_DAYS:
        assert result * DAY_MS >= 2**62 - DAY_MS
    else:
        assert result == days
