"""The runtime in this process: caches, reload, auto-disable, locks, meta pieces."""

import pytest

from bklog_app.plugins.models import Plugin, PluginConfig
from pipeline import locks
from pipeline.plugins import registry
from pipeline.plugins.chain import run_process_event_chain
from pipeline.plugins.dispatch import dispatch_stored_events
from pipeline.plugins.meta import Cache, delay_seconds

pytestmark = pytest.mark.django_db(transaction=True)


def plugin_event(project_id: int, **properties) -> dict:
    return {
        "uuid": "00000000-0000-0000-0000-000000000001",
        "event": "e",
        "distinct_id": "d",
        "team_id": project_id,
        "properties": properties,
        "timestamp": "2024-01-01T00:00:00.000Z",
    }


def local(local_plugin, code: str) -> Plugin:
    from pipeline.plugins.loader import code_from_folder, inspect_code, local_folder

    path = local_plugin(code)
    code_ = code_from_folder("local", local_folder(path))
    return Plugin.objects.create(
        name="P", source_type="local", path=path, plugin_json=code_.manifest, capabilities=inspect_code(code_)
    )


def test_a_project_without_configs_costs_no_query_after_the_first(project, django_assert_num_queries):
    event = plugin_event(project.id)
    assert run_process_event_chain(project.id, event).event is event
    with django_assert_num_queries(0):
        for _ in range(100):
            assert run_process_event_chain(project.id, event).event is event
        dispatch_stored_events([{**event, "person_id": None, "person_properties": {}, "elements_chain": ""}])


def test_a_new_config_reaches_the_cached_chain_through_the_reload_message(project, local_plugin):
    assert run_process_event_chain(project.id, plugin_event(project.id)).succeeded == []
    plugin = local(
        local_plugin, "def process_event(event, meta):\n    event['properties']['x'] = 1\n    return event\n"
    )
    config = PluginConfig.objects.create(project=project, plugin=plugin, enabled=True)
    result = run_process_event_chain(project.id, plugin_event(project.id))
    assert result.event["properties"] == {"x": 1}
    assert result.succeeded == [f"P ({config.pk})"]
    config.enabled = False
    config.save()
    assert run_process_event_chain(project.id, plugin_event(project.id)).succeeded == []


def test_a_config_that_keeps_failing_is_disabled_and_says_why(project, local_plugin, settings):
    settings.PLUGIN_AUTO_DISABLE_AFTER_FAILURES = 3
    plugin = local(local_plugin, "def process_event(event, meta):\n    raise RuntimeError('always')\n")
    config = PluginConfig.objects.create(project=project, plugin=plugin, enabled=True)
    for _ in range(3):
        assert run_process_event_chain(project.id, plugin_event(project.id)).failed == [f"P ({config.pk})"]
    config.refresh_from_db()
    assert config.enabled is False
    assert "disabled automatically after 3 failed calls in a row" in config.error["message"]
    assert config.log_entries.filter(type="ERROR", message__contains="plugin config disabled").exists()
    assert run_process_event_chain(project.id, plugin_event(project.id)).failed == []


def test_teardown_runs_once_per_instance(project, local_plugin):
    plugin = local(
        local_plugin,
        """
        def setup_plugin(meta):
            meta.cache.incr("setups")

        def teardown_plugin(meta):
            meta.cache.incr("teardowns")

        def process_event(event, meta):
            return event
        """,
    )
    config = PluginConfig.objects.create(project=project, plugin=plugin, enabled=True)
    run_process_event_chain(project.id, plugin_event(project.id))
    registry.forget(plugin_config_id=config.pk)
    registry.forget(plugin_config_id=config.pk)
    registry.forget(everything=True)
    cache = Cache(plugin.pk, project.id)
    assert (cache.get("setups"), cache.get("teardowns")) == (1, 1)


def test_locks():
    assert locks.claim_once("test:period:1", ttl=5)
    assert not locks.claim_once("test:period:1", ttl=5)
    with locks.held("test:running") as first, locks.held("test:running") as second:
        assert (first, second) == (True, False)
    with locks.held("test:running") as again:
        assert again


def test_meta_cache_and_time_units(project):
    cache = Cache(1, project.id)
    cache.set("k", {"a": [1]})
    assert cache.get("k") == {"a": [1]}
    assert cache.get("missing", "default") == "default"
    assert cache.incr("n") == 1 and cache.incr("n") == 2
    assert cache.lpush("l", [1, "two", {"three": 3}]) == 3
    assert cache.lrange("l", 0, -1) == [{"three": 3}, "two", 1]
    assert cache.lrem("l", 1, "two") == 1
    assert cache.lpop("l") == [{"three": 3}]
    assert cache.llen("l") == 1
    with pytest.raises(ValueError, match="at most 1000 values"):
        cache.lpush("l", list(range(1001)))
    assert delay_seconds(2, "seconds") == 2
    assert delay_seconds(1, "week") == 604800
    assert delay_seconds(500, "milliseconds") == 0.5
    with pytest.raises(ValueError, match="unknown time unit"):
        delay_seconds(1, "fortnights")
