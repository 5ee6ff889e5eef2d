"""Live plugin instances in one process: what configs share, what they keep apart, what a
plugin update changes, and what setting up another config of a known plugin costs."""

from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bklog_app.plugins.models import Plugin, PluginConfig, PluginSourceFile
from pipeline.plugins import registry
from pipeline.plugins.loader import code_for, code_from_folder, inspect_code, local_folder
from pipeline.plugins.meta import Cache
from tests.factories import make_project

pytestmark = pytest.mark.django_db(transaction=True)

COUNTING_PLUGIN = """
SEEN = []

def process_event(event, meta):
    SEEN.append(event["event"])
    event["properties"]["seen"] = len(SEEN)
    return event
"""


def builtin(name: str, organization) -> Plugin:
    plugin = Plugin(name=name, source_type="builtin", builtin=name, organization=organization)
    code = code_for(plugin)
    plugin.plugin_json, plugin.capabilities = code.manifest, inspect_code(code)
    plugin.save()
    return plugin


def local(local_plugin, code: str, organization) -> Plugin:
    path = local_plugin(code)
    code_ = code_from_folder("local", local_folder(path))
    return Plugin.objects.create(
        name="P",
        source_type="local",
        path=path,
        organization=organization,
        plugin_json=code_.manifest,
        capabilities=inspect_code(code_),
    )


def source(code: str, organization) -> Plugin:
    plugin = Plugin.objects.create(name="S", source_type="source", organization=organization)
    PluginSourceFile.objects.create(plugin=plugin, filename="plugin.json", source='{"name": "S", "main": "plugin.py"}')
    PluginSourceFile.objects.create(plugin=plugin, filename="plugin.py", source=code)
    code_ = code_for(plugin)
    plugin.plugin_json, plugin.capabilities = code_.manifest, inspect_code(code_)
    plugin.save()
    return plugin


def instance(plugin: Plugin, config: dict | None = None, project=None) -> registry.PluginInstance:
    project = project or make_project(plugin.organization)
    row = PluginConfig.objects.create(project=project, plugin=plugin, enabled=True, config=config or {})
    snapshot = registry.config_snapshot(row.pk)
    found = registry.instance_for(snapshot)
    assert found is not None, "the instance was not set up"
    return found


def missed_reload_message(plugin: Plugin) -> None:
    """A plugin update whose reload message this process missed: only the version tells."""
    Plugin.objects.filter(pk=plugin.pk).update(updated_at=timezone.now())


def event() -> dict:
    return {"event": "e", "distinct_id": "d", "properties": {"email": "a@b.c", "plan": "pro"}}


@pytest.fixture(autouse=True)
def fresh_registry():
    registry.forget(everything=True)
    yield
    registry.forget(everything=True)


def test_configs_of_a_builtin_share_its_module_and_keep_their_own_meta(project):
    plugin = builtin("property_filter", project.organization)
    first = instance(plugin, {"properties": "email"}, project)
    second = instance(plugin, {"properties": "plan"})
    assert first.namespace is second.namespace
    assert first.meta is not second.meta and first.meta.state is not second.meta.state
    assert first.method("process_event", event())["properties"] == {"plan": "pro"}
    assert second.method("process_event", event())["properties"] == {"email": "a@b.c"}


def test_configs_of_a_local_plugin_keep_their_own_module(project, local_plugin):
    plugin = local(local_plugin, COUNTING_PLUGIN, project.organization)
    first = instance(plugin, project=project)
    second = instance(plugin)
    assert first.namespace is not second.namespace
    assert [first.method("process_event", event())["properties"]["seen"] for _ in range(3)] == [1, 2, 3]
    assert second.method("process_event", event())["properties"]["seen"] == 1


def test_a_second_config_of_a_plugin_reads_neither_the_plugin_nor_attachments(project):
    plugin = builtin("taxonomy_standardiser", project.organization)
    instance(plugin, project=project)
    other = make_project(project.organization)
    row = PluginConfig.objects.create(project=other, plugin=plugin, enabled=True, config={})
    snapshot = registry.config_snapshot(row.pk)
    with CaptureQueriesContext(connection) as queries:
        assert registry.instance_for(snapshot) is not None
    read = [q["sql"] for q in queries if '"plugins_plugin"' in q["sql"] or '"plugins_pluginattachment"' in q["sql"]]
    assert read == []


def test_a_config_set_up_after_a_plugin_update_runs_the_new_code(project, local_plugin, settings):
    plugin = local(local_plugin, COUNTING_PLUGIN, project.organization)
    before = instance(plugin, project=project)
    assert before.method("process_event", event())["properties"]["seen"] == 1
    (Path(settings.PLUGINS_DIR) / plugin.path / "plugin.py").write_text(
        "def process_event(event, meta):\n    event['properties']['seen'] = 'new code'\n    return event\n"
    )
    missed_reload_message(plugin)
    after = instance(plugin)
    assert after.method("process_event", event())["properties"]["seen"] == "new code"


def test_a_config_set_up_after_a_source_plugin_update_runs_the_new_code(project):
    plugin = source(COUNTING_PLUGIN, project.organization)
    first = instance(plugin, project=project)
    second = instance(plugin)
    assert first.namespace is not second.namespace
    assert [first.method("process_event", event())["properties"]["seen"] for _ in range(2)] == [1, 2]
    assert second.method("process_event", event())["properties"]["seen"] == 1
    PluginSourceFile.objects.filter(plugin=plugin, filename="plugin.py").update(
        source="def process_event(event, meta):\n    event['properties']['seen'] = 'new code'\n    return event\n"
    )
    missed_reload_message(plugin)
    assert instance(plugin).method("process_event", event())["properties"]["seen"] == "new code"


def test_an_updated_builtin_is_executed_again_for_its_configs(project):
    plugin = builtin("property_filter", project.organization)
    first = instance(plugin, {"properties": "email"}, project)
    missed_reload_message(plugin)
    updated = registry.config_snapshot(first.snapshot.id)
    assert updated.version != first.snapshot.version
    again = registry.instance_for(updated)
    assert first.torn_down and again is not first
    assert again.namespace is not first.namespace
    assert instance(plugin).namespace is again.namespace


def test_past_the_bound_the_least_recently_used_instance_is_torn_down_and_set_up_again(project, local_plugin, settings):
    settings.PLUGIN_MAX_LIVE_INSTANCES = 2
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
        project.organization,
    )
    a, b, c = (instance(plugin, project=p) for p in (project, make_project(project.organization), None))
    assert [x.torn_down for x in (a, b, c)] == [True, False, False]
    assert registry.instance_for(b.snapshot) is b  # b is now the most recently used, c the least
    again = registry.instance_for(a.snapshot)
    assert again is not a and not again.torn_down
    assert c.torn_down and not b.torn_down
    assert len(registry.loaded_instances()) == 2

    def counts(x):
        cache = Cache(plugin.pk, x.snapshot.project_id)
        return cache.get("setups"), cache.get("teardowns")

    assert [counts(x) for x in (a, b, c)] == [(2, 1), (1, None), (1, 1)]
