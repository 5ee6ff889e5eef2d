"""pipeline/ingestion/token_rows.py: one thread per process asks the database for the tokens
callers miss, all that wait in one query, on a connection it keeps."""

import threading
import time

import pytest
from django.db import OperationalError, connection, transaction

from pipeline.ingestion import token_rows
from tests.factories import make_project

FIELDS = ("id", "anonymize_ips")


@pytest.mark.django_db(transaction=True)
def test_concurrent_callers_each_get_their_own_projects_row():
    made = [make_project() for _ in range(20)]
    answers: dict[str, tuple | None] = {}

    def ask(token: str) -> None:
        answers[token] = token_rows.row_for(token, FIELDS)

    def askers() -> int:
        return sum(thread.name == "bklog-token-rows" for thread in threading.enumerate())

    before = askers()
    tokens = [project.api_token for project in made] + ["phc_no_such_token"]
    threads = [threading.Thread(target=ask, args=(token,)) for token in tokens * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert answers == {project.api_token: (project.id, False) for project in made} | {"phc_no_such_token": None}
    assert askers() <= before + 1  # one thread asked for all of them (one per field list and process)


@pytest.mark.django_db(transaction=True)
def test_a_caller_inside_a_transaction_sees_the_project_it_just_wrote():
    with transaction.atomic():
        project = make_project()
        assert token_rows.row_for(project.api_token, FIELDS) == (project.id, False)


@pytest.mark.django_db(transaction=True)
def test_a_lookup_after_the_askers_connection_broke_is_answered(monkeypatch):
    project = make_project()
    assert token_rows.row_for(project.api_token, FIELDS) == (project.id, False)
    failures = iter([ConnectionError("server closed the connection unexpectedly")])
    real_rows = token_rows._rows

    def once_broken(tokens, fields):
        for failure in failures:
            raise failure
        return real_rows(tokens, fields)

    monkeypatch.setattr(token_rows, "_rows", once_broken)
    assert token_rows.row_for(project.api_token, FIELDS) == (project.id, False)  # tried again on a new one


@pytest.mark.django_db(transaction=True)
def test_a_lookup_after_postgresql_ended_the_askers_session_is_answered():
    if connection.vendor != "postgresql":
        pytest.skip("a server session to end is PostgreSQL's")
    project = make_project()
    assert token_rows.row_for(project.api_token, FIELDS) == (project.id, False)
    with connection.cursor() as cursor:  # the asker's kept session is the only other one
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        assert cursor.fetchall(), "no other session to end"
    assert token_rows.row_for(project.api_token, FIELDS) == (project.id, False)  # tried again on a new one


@pytest.mark.django_db(transaction=True)
def test_when_the_database_stays_down_every_waiting_caller_gets_the_error(monkeypatch):
    def down(tokens, fields):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(token_rows, "_rows", down)
    with pytest.raises(OperationalError, match="connection refused"):
        token_rows.row_for("phc_any", FIELDS)


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death it simulates
def test_a_lookup_thread_that_died_is_replaced(monkeypatch):
    project = make_project()
    asker = token_rows._askers.setdefault(FIELDS, token_rows._Asker(FIELDS))
    monkeypatch.setattr(asker, "_answer", lambda questions: (_ for _ in ()).throw(RuntimeError("thread died")))
    with pytest.raises(OperationalError, match="did not answer"), monkeypatch.context() as patch:
        patch.setattr(token_rows, "WAIT_SECONDS", 0.5)
        token_rows.row_for(project.api_token, FIELDS)
    monkeypatch.undo()
    assert token_rows.row_for(project.api_token, FIELDS) == (project.id, False)


@pytest.mark.django_db(transaction=True)
def test_closing_ends_the_askers_session_and_the_next_lookup_starts_anew():
    project = make_project()
    assert token_rows.row_for(project.api_token, FIELDS) == (project.id, False)

    token_rows.close_all()

    assert not any(thread.name == "bklog-token-rows" and thread.is_alive() for thread in threading.enumerate())
    if connection.vendor == "postgresql":
        others = None
        for _ in range(50):  # a backend leaves pg_stat_activity once it has seen its client go
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
                (others,) = cursor.fetchone()
            if others == 0:
                break
            time.sleep(0.05)
        assert others == 0
    assert token_rows.row_for(project.api_token, FIELDS) == (project.id, False)
