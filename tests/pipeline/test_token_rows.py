"""pipeline/ingestion/token_rows.py: one thread per process asks the database for the tokens
callers miss, all that wait in one query, on a connection it keeps."""

import threading

import pytest
from django.db import transaction

from pipeline.ingestion import token_rows
from tests.factories import make_project

FIELDS = ("id", "anonymize_ips")


@pytest.mark.django_db(transaction=True)
def test_concurrent_callers_each_get_their_own_projects_row():
    made = [make_project() for _ in range(20)]
    answers: dict[str, tuple | None] = {}

    def ask(token: str) -> None:
        answers[token] = token_rows.row_for(token, FIELDS)

    tokens = [project.api_token for project in made] + ["phc_no_such_token"]
    threads = [threading.Thread(target=ask, args=(token,)) for token in tokens * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert answers == {project.api_token: (project.id, False) for project in made} | {"phc_no_such_token": None}
    askers = [thread for thread in threading.enumerate() if thread.name == "bklog-token-rows"]
    assert len(askers) == 1


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
def test_when_the_database_stays_down_every_waiting_caller_gets_the_error(monkeypatch):
    def down(tokens, fields):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(token_rows, "_rows", down)
    with pytest.raises(ConnectionError, match="connection refused"):
        token_rows.row_for("phc_any", FIELDS)
