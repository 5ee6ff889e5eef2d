"""The per-process token cache asks the database for a token once at a time
(pipeline/ingestion/projects.py): concurrent callers share one lookup."""

import threading
import time

import pytest

from pipeline.ingestion import projects

ROW = (7, False, None)


@pytest.fixture
def lookups(monkeypatch):
    """Stands in for the database query (the subject is who asks, not what): counts the calls
    and holds each until the test lets it go."""

    class Lookups:
        calls = 0
        release = threading.Event()
        started = threading.Event()
        fail_first = False

        def __call__(self, token):
            self.calls += 1
            self.started.set()
            assert self.release.wait(5), "the test never let the lookup go"
            if self.fail_first and self.calls == 1:
                raise ConnectionError("database went away")
            return ROW

    fake = Lookups()
    monkeypatch.setattr(projects, "_row_for", fake)
    monkeypatch.setattr(projects, "_cache", {})
    monkeypatch.setattr(projects, "_epoch", [b"1"])
    return fake


def _in_threads(count: int) -> tuple[list[threading.Thread], list]:
    answers: list = []

    def look() -> None:
        try:
            answers.append(projects.project_for_token("tok", check_epoch=False))
        except Exception as exc:  # the test inspects it
            answers.append(exc)

    threads = [threading.Thread(target=look) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, answers


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()


def test_callers_with_nothing_cached_share_one_lookup(lookups):
    threads, answers = _in_threads(8)
    assert lookups.started.wait(5)
    time.sleep(0.05)  # the others are now waiting for it
    lookups.release.set()
    _join(threads)
    assert lookups.calls == 1
    assert answers == [projects.ProjectInfo(*ROW)] * 8


def test_an_expired_answer_is_served_to_every_caller_while_it_is_renewed_in_the_background(lookups):
    old = projects.ProjectInfo(7, True, 10)
    projects._cache["tok"] = (time.monotonic() - projects.CACHE_SECONDS - 1, old)
    callers, answers = _in_threads(6)
    _join(callers)  # none waited for the lookup, the one that started it included
    assert answers == [old] * 6
    assert lookups.started.wait(5)
    lookups.release.set()
    wait_for(lambda: projects._cache["tok"][1] == projects.ProjectInfo(*ROW))
    assert lookups.calls == 1
    assert projects._asking == {}


def test_a_failed_renewal_keeps_the_old_answer_and_the_next_caller_tries_again(lookups):
    lookups.fail_first = True
    lookups.release.set()
    old = projects.ProjectInfo(7, True, 10)
    projects._cache["tok"] = (time.monotonic() - projects.CACHE_SECONDS - 1, old)
    assert projects.project_for_token("tok", check_epoch=False) == old
    wait_for(lambda: lookups.calls == 1 and projects._asking == {})
    assert projects._cache["tok"][1] == old
    assert projects.project_for_token("tok", check_epoch=False) == old
    wait_for(lambda: projects._cache["tok"][1] == projects.ProjectInfo(*ROW))
    assert lookups.calls == 2


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the background renewal did not finish"
        time.sleep(0.01)


def test_when_the_shared_lookup_fails_a_waiting_caller_asks_itself(lookups):
    lookups.fail_first = True
    first, first_answer = _in_threads(1)
    assert lookups.started.wait(5)
    second, second_answer = _in_threads(1)
    time.sleep(0.05)
    lookups.release.set()
    _join(first + second)
    assert isinstance(first_answer[0], ConnectionError)
    assert second_answer == [projects.ProjectInfo(*ROW)]
    assert lookups.calls == 2
    assert projects._asking == {}


def test_an_answer_that_may_predate_an_epoch_move_is_not_kept(lookups):
    first, answer = _in_threads(1)
    assert lookups.started.wait(5)
    projects.note_epoch(b"2")  # a project changed while the database was being asked
    lookups.release.set()
    _join(first)
    assert answer == [projects.ProjectInfo(*ROW)]
    assert "tok" not in projects._cache
