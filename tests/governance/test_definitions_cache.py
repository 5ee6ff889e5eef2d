"""What a process remembers of recorded definitions (pipeline/governance/definitions.py) stays
small with many projects: equal sets of names are one object, and past the bound the oldest
entries are forgotten, not all of them."""

import pytest

from bklog_app.governance.models import EventProperty, PropertyDefinition
from pipeline.governance import definitions
from pipeline.ingestion.batch import ingest_messages
from tests.factories import make_project
from tests.governance.conftest import event, message

pytestmark = pytest.mark.django_db

SDK_PROPERTIES = {"$browser": "Chrome", "$os": "Mac OS X", "$current_url": "https://example.com/", "plan": "pro"}


@pytest.fixture(autouse=True)
def _empty_caches():
    for cache in (definitions._known, definitions._known_properties, definitions._shared):
        cache.clear()


def test_projects_sending_the_same_properties_share_what_is_remembered():
    first, second = make_project(), make_project()
    ingest_messages([message(project, [event("$pageview", dict(SDK_PROPERTIES))]) for project in (first, second)])

    assert definitions._known[first.id, "$pageview"] is definitions._known[second.id, "$pageview"]
    assert definitions._known_properties[first.id] is definitions._known_properties[second.id]
    assert definitions._known_properties[first.id] == frozenset(SDK_PROPERTIES)


def test_past_the_bound_the_oldest_are_forgotten_and_recorded_again_when_they_return(monkeypatch):
    monkeypatch.setattr(definitions, "CACHE_LIMIT", 4)
    projects = [make_project() for _ in range(6)]
    for project in projects:
        ingest_messages([message(project, [event("signed_up", {"plan": "pro", f"own_{project.id}": 1})])])

    remembered = {project_id for project_id, _ in definitions._known}
    assert projects[-1].id in remembered and projects[0].id not in remembered
    assert len(remembered) >= 3  # trimmed to 3/4 of the bound, not emptied

    ingest_messages([message(projects[0], [event("signed_up", {"plan": "pro", "new_key": True})])])
    names = set(PropertyDefinition.objects.filter(project=projects[0]).values_list("name", flat=True))
    assert names == {"plan", f"own_{projects[0].id}", "new_key"}
    on_event = EventProperty.objects.filter(project=projects[0], event="signed_up")
    assert on_event.count() == 3
