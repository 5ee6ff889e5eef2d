"""Step 1 for a whole batch: the tokens, plugin chains and tracking plans no process has cached
are read in one query each (pipeline/ingestion/projects.py `load_tokens`,
pipeline/plugins/registry.py `load_project_plugins`, pipeline/governance/ingestion.py
`load_plans`), whatever number of projects the batch spans."""

import json
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bklog_app.models import DeadLetter
from bklog_app.plugins.models import Plugin, PluginConfig
from pipeline.governance import ingestion as governance
from pipeline.ingestion import isolation, projects
from pipeline.ingestion.batch import ingest_messages
from pipeline.ingestion.isolation import ChainCost
from pipeline.plugins import registry, reload
from pipeline.redis import get_redis
from pipeline.storage.events import list_events
from tests.factories import make_project
from tests.governance.conftest import event as governance_event
from tests.governance.conftest import message as governance_message
from tests.governance.conftest import set_plan  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db(transaction=True)


def queries_on(queries, table: str) -> list[str]:
    return [q["sql"] for q in queries if f'FROM "{table}"' in q["sql"]]


@pytest.fixture
def cold():
    projects.forget()
    registry._projects.clear()
    yield
    projects.forget()
    registry._projects.clear()


_marker = {"value": None, "seen": threading.Event()}


def _note_marker(message: dict) -> None:
    if message.get("marker") is not None and message.get("marker") == _marker["value"]:
        _marker["seen"].set()


reload.on_reload(_note_marker)


def reloads_applied() -> None:
    """Until this process's reload listener has applied every reload published so far. Saving a
    config publishes one, and the listener drops the cached chains whenever it gets there: after
    a batch has cached them, each would cost the batch a query of its own, a race of the test
    and not the batch's cost. A marker published after them comes back last (published again
    until it does: a listener reconnecting after a Redis restart misses what came before)."""
    reload.ensure_listening()
    _marker["value"], seen = uuid.uuid4().hex, _marker["seen"]
    seen.clear()
    deadline = time.monotonic() + 30
    while not seen.is_set() and time.monotonic() < deadline:
        get_redis().publish(settings.PLUGINS_RELOAD_PUBSUB_CHANNEL, json.dumps({"marker": _marker["value"]}))
        seen.wait(0.5)
    assert seen.is_set(), "the plugin reload listener did not get its marker back in 30 s"


def with_chains(count: int) -> list:
    """`count` projects: the first with no plugin, the others with the two-plugin chain, in the
    order of their configs' `order` (given here in reverse)."""
    takes_events = {"capabilities": {"methods": ["process_event"]}}
    filter_plugin, _ = Plugin.objects.get_or_create(
        name="filter", source_type="builtin", builtin="property_filter", defaults=takes_events
    )
    names, _ = Plugin.objects.get_or_create(
        name="names", source_type="builtin", builtin="taxonomy_standardiser", defaults=takes_events
    )
    made = [make_project() for _ in range(count)]
    for project in made[1:]:
        PluginConfig.objects.create(
            project=project, plugin=names, enabled=True, order=1, config={"naming_convention": "camelCase"}
        )
        PluginConfig.objects.create(
            project=project, plugin=filter_plugin, enabled=True, order=0, config={"properties": "email"}
        )
        PluginConfig.objects.create(project=project, plugin=filter_plugin, enabled=False, order=2, config={})
    return made


def test_tokens_of_a_batch_are_read_in_one_query(cold):
    made = [make_project(anonymize_ips=n == 1) for n in range(4)]
    isolation.record({made[2].id: ChainCost(events=40, seconds=4.0)}, projects.EPOCH_KEY)
    tokens = [p.api_token for p in made] + ["no-such-token"]
    with CaptureQueriesContext(connection) as queries:
        projects.load_tokens(tokens)
        found = [projects.project_for_token(token) for token in tokens]
    assert len(queries_on(queries, "bklog_app_project")) == 1, queries_on(queries, "bklog_app_project")
    assert found[-1] is None
    for project, info in zip(made, found, strict=False):
        looked_up_alone = projects.project_by_id(project.id)
        assert info == looked_up_alone, "the same answer as a lookup of its own"
    assert [info.anonymize_ips for info in found[:4]] == [False, True, False, False]
    assert [info.ingestion_overflow for info in found[:4]] == [False, False, True, False]


def test_a_token_changed_under_the_lookup_is_not_kept(cold, monkeypatch):
    made = [make_project() for _ in range(2)]
    real_filter = projects.Project.objects.filter

    def filter_while_a_project_changes(*args, **kwargs):
        projects.forget()  # another process saved a project meanwhile: the epoch moved
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(projects.Project.objects, "filter", filter_while_a_project_changes)
    projects.load_tokens([p.api_token for p in made])
    monkeypatch.undo()
    assert projects._cache == {}, "an answer older than the change is not cached"


def test_chains_of_a_batch_are_read_in_one_query(cold):
    made = with_chains(4)
    with CaptureQueriesContext(connection) as queries:
        registry.load_project_plugins(p.id for p in made)
        batched = [registry.project_plugins(p.id) for p in made]
    assert len(queries_on(queries, "plugins_pluginconfig")) == 1
    registry._projects.clear()
    assert batched == [registry.project_plugins(p.id) for p in made], "the same chains as a lookup each"
    assert batched[0] == registry.NO_PLUGINS
    assert [s.plugin_name for s in batched[1].chain] == ["filter", "names"]


def test_a_batch_of_many_cold_projects_asks_once_for_their_tokens_and_chains(cold):
    def ingest(made: list) -> tuple[int, int]:
        """(queries on projects, queries on plugin configs) of a batch of a request per project."""
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        messages = [
            {
                "id": str(uuid.uuid4()),
                "token": project.api_token,
                "project_id": project.id,
                "events": [{"event": "e", "distinct_id": "u", "uuid": str(uuid.uuid4()), "properties": {"email": "x"}}],
                "ip": None,
                "now": now,
                "sent_at": None,
            }
            for project in made
        ]
        reloads_applied()
        with CaptureQueriesContext(connection) as queries:
            report = ingest_messages(messages)
        assert report.stored == len(made)
        return len(queries_on(queries, "bklog_app_project")), len(queries_on(queries, "plugins_pluginconfig"))

    few = with_chains(3)
    assert ingest(few) == (1, 1)
    assert ingest(with_chains(8)) == (1, 1)
    [unfiltered] = list_events(few[0].id)
    [filtered] = list_events(few[1].id)
    assert unfiltered["properties"]["email"] == "x" and "email" not in filtered["properties"], "each its own chain"


def test_plans_of_a_batch_are_read_in_one_query(cold, set_plan):  # noqa: F811
    """Each project gets its own plan (or none) from the one query: an enforced plan refuses
    its project's unplanned event, the same event of the others is stored."""
    made = [make_project() for _ in range(4)]
    set_plan(made[1], mode="enforce", allow_unplanned_events=False)
    set_plan(made[2], mode="enforce", events={"clicked": {"schema": {"type": "object"}}})
    projects.forget()
    governance._plans.clear()
    batch = [governance_message(project, [governance_event("clicked", {"x": 1})]) for project in made]
    with CaptureQueriesContext(connection) as queries:
        report = ingest_messages(batch)
    assert len(queries_on(queries, "governance_trackingplan")) == 1, queries_on(queries, "governance_trackingplan")
    assert (report.stored, report.dead_lettered) == (3, 1)
    assert [len(list_events(project.id)) for project in made] == [1, 0, 1, 1]
    assert DeadLetter.objects.get().project_id == made[1].id
