"""How the ingestion consumer cuts batches from its backlog (pipeline/ingestion/backlog.py)."""

from pipeline.ingestion.backlog import Backlog, BatchLimits

LIMITS = BatchLimits(messages=200, events=5_000)


def backlog_of(*events: int) -> Backlog[str]:
    backlog: Backlog[str] = Backlog(LIMITS)
    for index, count in enumerate(events):
        backlog.add(f"m{index}", count)
    return backlog


def test_a_long_backlog_goes_in_full_batches():
    backlog = backlog_of(*[100] * 300)  # 30,000 events
    assert backlog.full()
    share = backlog.share(processes=2)
    assert share == 5_000
    assert backlog.take(share) == [f"m{i}" for i in range(50)]
    assert (len(backlog), backlog.events) == (250, 25_000)


def test_the_end_of_a_burst_is_shared_between_the_processes():
    backlog = backlog_of(*[100] * 79)  # 7,900 events: 4,000 and 3,900, not 5,000 and 2,900
    share = backlog.share(processes=2)
    assert share == 3_950
    assert backlog.take(share) == [f"m{i}" for i in range(40)]
    assert backlog.take(share) == [f"m{i}" for i in range(40, 79)]
    assert not backlog


def test_shares_shrink_as_the_backlog_does_down_to_a_tenth_of_a_batch():
    backlog = backlog_of(*[100] * 30)
    sizes = []
    while backlog:
        sizes.append(len(backlog.take(backlog.share(processes=2))))
    # 3,000 events: 1,500, then half of what is left each time, never under 500 (a tenth of 5,000)
    assert sizes == [15, 8, 5, 2]


def test_a_small_backlog_is_not_split():
    backlog = backlog_of(*[1] * 50)  # single-event requests of a quiet stack: one batch per linger
    assert not backlog.full()
    assert len(backlog.take(backlog.share(processes=2))) == 50
    assert not backlog


def test_a_batch_holds_at_most_the_message_limit():
    backlog = backlog_of(*[1] * 450)
    assert backlog.full()
    assert len(backlog.take(backlog.share(processes=2))) == 200
    assert (len(backlog), backlog.events) == (250, 250)


def test_a_message_larger_than_the_share_still_goes_whole():
    backlog = backlog_of(8_000, 10)
    assert backlog.take(backlog.share(processes=2)) == ["m0"]
    assert backlog.take(backlog.share(processes=2)) == ["m1"]
    assert (len(backlog), backlog.events) == (0, 0)
