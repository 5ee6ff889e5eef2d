"""The chain's copies (pipeline/plugins/chain.py): plugins change the chain's own copy of the
event, and what a plugin changed before it raised is undone, whatever it put in the event."""

import copy

import pytest

from bklog_app.plugins.models import PluginConfig
from pipeline.plugins.chain import run_process_event_chain

pytestmark = pytest.mark.django_db(transaction=True)


def _event(project) -> dict:
    return {
        "uuid": "0191c5a0-0000-7000-8000-000000000001",
        "event": "purchase",
        "distinct_id": "user-1",
        "team_id": project.id,
        "properties": {"plan": "pro", "cart": {"items": [1, 2]}},
        "$set": {"plan": "pro"},
    }


def test_the_callers_event_is_never_changed(project, local_plugin, install):
    path = local_plugin(
        """
        def process_event(event, meta):
            event["properties"]["cart"]["items"].append(3)
            event["$set"]["seen"] = True
            event["properties"]["enriched"] = 1
            return event
        """
    )
    install({"source_type": "local", "path": path, "name": "Mutator"})
    sent = _event(project)
    as_sent = copy.deepcopy(sent)

    result = run_process_event_chain(project.id, sent)

    assert sent == as_sent
    assert result.event["properties"]["cart"]["items"] == [1, 2, 3]
    assert result.event["$set"] == {"plan": "pro", "seen": True}
    assert result.event["properties"]["enriched"] == 1


_BROKEN = """
def process_event(event, meta):
    event["properties"]["cart"]["items"].clear()
    event["properties"]["half_done"] = True
    raise ValueError("half way")
"""


def test_a_failed_plugins_changes_are_undone_for_the_next_plugin(project, local_plugin, install):
    broken = local_plugin(_BROKEN)
    later = local_plugin(
        """
        def process_event(event, meta):
            event["properties"]["later_saw"] = sorted(event["properties"])
            event["properties"]["later_items"] = list(event["properties"]["cart"]["items"])
            return event
        """
    )
    _, failed = install({"source_type": "local", "path": broken, "name": "Broken"}, order=0)
    install({"source_type": "local", "path": later, "name": "Later"}, order=1)

    result = run_process_event_chain(project.id, _event(project))

    assert result.failed == [f"Broken ({failed['id']})"]
    assert result.event["properties"]["later_saw"] == ["cart", "plan"]
    assert result.event["properties"]["later_items"] == [1, 2]
    recorded = PluginConfig.objects.get(pk=failed["id"]).error["event"]
    assert recorded["properties"] == {"plan": "pro", "cart": {"items": [1, 2]}}


def test_the_undo_holds_when_the_event_holds_what_json_cannot(project, local_plugin, install):
    tagger = local_plugin(
        """
        def process_event(event, meta):
            event["properties"]["tags"] = {"a", "b"}
            return event
        """
    )
    later = local_plugin(
        """
        def process_event(event, meta):
            event["properties"]["later_saw"] = sorted(event["properties"])
            event["properties"]["later_items"] = list(event["properties"]["cart"]["items"])
            return event
        """
    )
    for order, path in enumerate((tagger, local_plugin(_BROKEN), later)):
        install({"source_type": "local", "path": path, "name": f"Plugin {order}"}, order=order)

    result = run_process_event_chain(project.id, _event(project))

    assert len(result.failed) == 1
    assert result.event["properties"]["tags"] == {"a", "b"}
    assert result.event["properties"]["later_saw"] == ["cart", "plan", "tags"]
    assert result.event["properties"]["later_items"] == [1, 2]
