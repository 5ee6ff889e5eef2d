"""pipeline/bounded.py: a per-process cache past its bound loses its oldest entries, not all of them."""

from pipeline import bounded
from pipeline.ingestion import projects
from tests.factories import make_project


def test_a_cache_past_its_bound_keeps_its_newest_entries():
    cache = {n: str(n) for n in range(11)}
    bounded.trim(cache, limit=10)
    assert list(cache) == [4, 5, 6, 7, 8, 9, 10]  # down to 3/4 of the bound, oldest first out
    bounded.trim(cache, limit=10)
    assert len(cache) == 7  # under the bound: untouched


def test_more_live_tokens_than_the_bound_do_not_empty_the_projects_cache(db, monkeypatch):
    monkeypatch.setattr(bounded, "ENTRIES", 8)
    projects.forget()
    made = [make_project() for _ in range(12)]
    projects.load_tokens([project.api_token for project in made[:6]])
    for project in made[6:]:
        assert projects.project_for_token(project.api_token).id == project.id
    assert len(projects._cache) <= 8
    assert made[-1].api_token in projects._cache and made[-2].api_token in projects._cache
    assert made[0].api_token not in projects._cache  # the oldest went first
