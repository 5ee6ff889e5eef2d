"""The chain (pipeline/plugins/chain.py): plugins change the chain's own copy of the event, what a
plugin changed before it raised is undone, whatever it put in the event, the calls over one
event, one series (registry.PluginCalls), keep each call's own limits and log, and a batch's
series (`Chains`) runs each event as a chain of its own would."""

import copy
import sys
import threading

import pytest

from bklog_app.plugins.models import PluginConfig, PluginLogEntry
from pipeline.plugins import registry
from pipeline.plugins.chain import Chains, run_process_event_chain
from tests.factories import make_project
from tests.plugins.test_limits import RECURSIVE

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


def test_a_plugin_after_a_builtin_given_the_event_uncopied_still_never_changes_the_callers(
    project, local_plugin, install
):
    """property_filter leaves the event it is given unchanged, so the chain gives it the caller's
    own; the plugin after it changes its event in place, so it gets the chain's copy, and what it
    changed before it raised is undone back to the built-in's output."""
    install({"source_type": "builtin", "builtin": "property_filter"}, config={"properties": "plan"}, order=0)
    install({"source_type": "local", "path": local_plugin(_BROKEN), "name": "Broken"}, order=1)
    sent = _event(project)
    as_sent = copy.deepcopy(sent)

    result = run_process_event_chain(project.id, sent)

    assert sent == as_sent
    assert [name.split(" (")[0] for name in result.succeeded] == ["Property filter"]
    assert len(result.failed) == 1
    assert result.event["properties"] == {"cart": {"items": [1, 2]}}  # filtered, the failed changes undone
    assert result.event["$set"] == {}


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


# --- one series of calls per event (registry.PluginCalls) ----------------------------------


def _console_lines(config_id: int) -> list[str]:
    return list(
        PluginLogEntry.objects.filter(plugin_config_id=config_id, source="CONSOLE")
        .order_by("timestamp", "id")
        .values_list("message", flat=True)
    )


_CHATTY = """
def process_event(event, meta):
    for n in range(5):
        print("a", n)
    return event
"""
_QUIET = """
def process_event(event, meta):
    print("b 0")
    print("b 1")
    return event
"""
_SLOW = """
import time

def process_event(event, meta):
    time.sleep(0.6)
    event["properties"][meta.config["mark"]] = 1
    return event
"""
_STUCK = """
def process_event(event, meta):
    while True:
        pass
"""


def test_each_call_of_a_chain_keeps_its_own_log_and_log_limit(project, local_plugin, install, settings):
    settings.PLUGIN_LOG_MAX_ENTRIES_PER_CALL = 3
    _, first = install({"source_type": "local", "path": local_plugin(_CHATTY), "name": "Chatty"}, order=0)
    _, second = install({"source_type": "local", "path": local_plugin(_QUIET), "name": "Quiet"}, order=1)

    result = run_process_event_chain(project.id, _event(project))
    run_process_event_chain(project.id, _event(project))  # the next event's calls start afresh

    assert result.failed == []
    assert _console_lines(first["id"]) == ["a 0", "a 1", "a 2"] * 2
    assert _console_lines(second["id"]) == ["b 0", "b 1"] * 2  # the first plugin's count is not its
    warnings = PluginLogEntry.objects.filter(plugin_config_id=first["id"], source="SYSTEM", type="WARN")
    assert warnings.count() == 2


def test_each_call_of_a_chain_has_its_own_time_limit(project, local_plugin, install, settings):
    settings.PLUGIN_TIMEOUT_SECONDS = 1
    slow = local_plugin(_SLOW, config=[{"key": "mark", "type": "string"}])
    install({"source_type": "local", "path": slow, "name": "Slow"}, config={"mark": "first"}, order=0)
    install({"source_type": "local", "path": slow, "name": "Slow"}, config={"mark": "second"}, order=1)
    _, looping = install({"source_type": "local", "path": local_plugin(_STUCK), "name": "Stuck"}, order=2)

    result = run_process_event_chain(project.id, _event(project))

    # 1.2 s in all: a deadline for the whole series would have stopped the second plugin.
    assert result.event["properties"]["first"] == result.event["properties"]["second"] == 1
    assert result.failed == [f"Stuck ({looping['id']})"]
    assert PluginConfig.objects.get(pk=looping["id"]).error["name"] == "PluginTimeoutError"


def test_a_chain_leaves_the_recursion_limit_and_the_lock_as_it_found_them(project, local_plugin, install):
    _, runaway = install({"source_type": "local", "path": local_plugin(RECURSIVE), "name": "Runaway"}, order=0)
    before = sys.getrecursionlimit()

    result = run_process_event_chain(project.id, _event(project))

    assert result.failed == [f"Runaway ({runaway['id']})"]
    assert PluginConfig.objects.get(pk=runaway["id"]).error["name"] == "RecursionError"
    assert sys.getrecursionlimit() == before
    assert _lock_is_free()  # the reload thread tears instances down under the lock


# --- one series for a batch's events (Chains) --------------------------------------------


def test_a_config_disabled_during_a_batch_is_not_called_for_its_later_events(project, local_plugin, install, settings):
    settings.PLUGIN_AUTO_DISABLE_AFTER_FAILURES = 2
    failing = local_plugin("def process_event(event, meta):\n    print('called')\n    raise ValueError('always')\n")
    _, config = install({"source_type": "local", "path": failing, "name": "Failing"})

    with Chains() as chains:
        results = [chains.run(project.id, _event(project)) for _ in range(4)]

    assert [result.failed for result in results] == [[f"Failing ({config['id']})"]] * 2 + [[]] * 2
    assert _console_lines(config["id"]) == ["called"] * 2
    assert PluginConfig.objects.get(pk=config["id"]).enabled is False


_SET_UP_THEN_MARK = """
def setup_plugin(meta):
    print("set up")

def process_event(event, meta):
    event["properties"]["marked"] = True
    return event
"""


def test_an_instance_evicted_during_a_batch_is_set_up_again_for_its_next_event(
    project, local_plugin, install, settings
):
    settings.PLUGIN_MAX_LIVE_INSTANCES = 1  # each project's instance evicts the other's
    plugin, first = install({"source_type": "local", "path": local_plugin(_SET_UP_THEN_MARK), "name": "Mark"})
    other = make_project(project.organization)
    second = PluginConfig.objects.create(project=other, plugin_id=plugin["id"], enabled=True)

    with Chains() as chains:
        results = [chains.run(p.id, {**_event(p), "team_id": p.id}) for p in (project, other) * 2]

    assert [result.succeeded for result in results] == [[f"Mark ({first['id']})"], [f"Mark ({second.pk})"]] * 2
    assert all(result.event["properties"]["marked"] for result in results)
    assert _console_lines(first["id"]) == ["set up"] * 2
    assert _console_lines(second.pk) == ["set up"] * 2


def test_a_batch_finds_each_projects_chain_once_and_frees_the_lock_after(project, local_plugin, install, monkeypatch):
    install({"source_type": "local", "path": local_plugin(_SET_UP_THEN_MARK), "name": "Mark"})
    looked_up = []
    project_plugins = registry.project_plugins
    monkeypatch.setattr(registry, "project_plugins", lambda pid: looked_up.append(pid) or project_plugins(pid))

    with Chains() as chains:
        for _ in range(5):
            assert chains.run(project.id, _event(project)).event["properties"]["marked"]

    assert looked_up == [project.id]
    assert _lock_is_free()


def _lock_is_free() -> bool:
    """Whether another thread can take the plugin lock (it gives it back at once)."""
    taken = []

    def take_and_give_back():
        taken.append(registry._lock.acquire(timeout=5))
        if taken[-1]:
            registry._lock.release()

    thread = threading.Thread(target=take_and_give_back)
    thread.start()
    thread.join()
    return taken == [True]
