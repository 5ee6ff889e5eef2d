"""The database rows of the tokens a process's cache misses, asked by one thread per process.

Under gevent every greenlet has its own database connection, opened for the request and closed
at its end: a capture request whose token was not cached paid a new PostgreSQL connection (a
backend started, authenticated, its catalog caches filled: about 9 ms of PostgreSQL's CPU) for a
one-row lookup. With thousands of projects, after a deploy or as cached answers expire, that was
most requests: the bench's 10,000 projects took 190 capture requests/s, PostgreSQL's CPU the
limit.

Here one thread (a greenlet under gevent) asks for every token that callers wait on, in one
query for all that arrived meanwhile, on a connection of its own that stays open. A failed
query is tried once more on a new connection (PostgreSQL restarted, the connection went stale);
if that fails too, every caller of the batch gets the error, as a lookup of its own would have
given it (a lookup not answered within WAIT_SECONDS is an OperationalError too: an outage,
which capture answers 503 and ingestion retries). A caller inside a transaction asks on its own
connection instead, so it sees what it wrote (and tests that write projects in a transaction
see them).
"""

import os
import threading
from contextlib import suppress
from dataclasses import dataclass, field

import structlog
from django.db import OperationalError, connection

from bklog_app.models import Project

logger = structlog.get_logger(__name__)

WAIT_SECONDS = 10.0


@dataclass
class _Question:
    token: str
    answered: threading.Event = field(default_factory=threading.Event)
    row: tuple | None = None
    error: BaseException | None = None


class _Asker:
    def __init__(self, fields: tuple[str, ...]) -> None:
        self.fields = fields
        self._lock = threading.Lock()
        self._waiting: list[_Question] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False

    def ask(self, token: str) -> tuple | None:
        question = _Question(token)
        with self._lock:
            self._waiting.append(question)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bklog-token-rows", daemon=True)
                self._thread.start()
        self._wake.set()
        if not question.answered.wait(WAIT_SECONDS):
            raise OperationalError(f"the database did not answer a project lookup within {WAIT_SECONDS:g} s")
        if question.error is not None:
            raise OperationalError(f"project lookup failed: {question.error}") from question.error
        return question.row

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                questions, self._waiting = self._waiting, []
            if questions:
                self._answer(questions)
            if self._closing:
                connection.close()
                return

    def close(self, timeout: float = 5.0) -> None:
        """Answer what waits, close the kept connection and end the thread."""
        with self._lock:
            self._closing = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)

    def _answer(self, questions: list[_Question]) -> None:
        """Answer every question, whatever happens: a caller never waits out WAIT_SECONDS for a
        thread that failed."""
        tokens = sorted({question.token for question in questions})
        rows: dict[str, tuple] = {}
        error = None
        for _attempt in range(2):
            try:
                rows = dict(_rows(tokens, self.fields))
                error = None
                break
            except Exception as exc:  # every waiting caller gets it
                error = exc
                with suppress(Exception):  # a connection too broken to close is dropped all the same
                    connection.close()  # the next attempt connects anew
        if error is not None:
            logger.warning("project lookup failed", tokens=len(tokens), error=str(error))
        for question in questions:
            question.row = rows.get(question.token)
            question.error = error
            question.answered.set()


def _rows(tokens: list[str], fields: tuple[str, ...]) -> list[tuple]:
    return [(row[0], row[1:]) for row in Project.objects.filter(api_token__in=tokens).values_list("api_token", *fields)]


_askers: dict[tuple[str, ...], _Asker] = {}
os.register_at_fork(after_in_child=_askers.clear)  # a child starts its own thread, with fresh locks


def close_all() -> None:
    """End this process's lookup threads and close their connections (a test database's
    teardown needs no session left on it); the next lookup starts a thread anew."""
    while _askers:
        _fields, asker = _askers.popitem()
        asker.close()


def row_for(token: str, fields: tuple[str, ...]) -> tuple | None:
    """The `fields` of the project whose token this is, or None."""
    if connection.in_atomic_block:
        return Project.objects.filter(api_token=token).values_list(*fields).first()
    asker = _askers.get(fields) or _askers.setdefault(fields, _Asker(fields))
    return asker.ask(token)
