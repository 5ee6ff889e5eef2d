"""What one process knows about plugins: each project's enabled configs, and live instances.

Both are cached in-process. A project with no enabled config costs one dict lookup per event
(ingestion steps 4 and 8). Reload messages (`pipeline.plugins.reload`) drop the project caches
and tear down the changed instances at once; PLUGIN_CHAIN_CACHE_SECONDS bounds how long a missed
message can leave a cache stale, and every rebuild compares versions (the config's and the
plugin's `updated_at`), so an instance is replaced only when it changed.

Threads: plugin calls run on the task's thread; teardown on reload runs on the listener's
thread. One re-entrant lock keeps them apart, so an instance is never torn down mid-call.
"""

import os
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson
import structlog
from django.conf import settings
from django.utils import timezone

from bklog_app.plugins.models import Plugin, PluginAttachment, PluginConfig
from pipeline import hot_settings
from pipeline.errors import is_outage
from pipeline.plugins import reload
from pipeline.plugins.api import RetryError
from pipeline.plugins.config import ExportSettings, export_settings
from pipeline.plugins.limits import RecursionHeadroom
from pipeline.plugins.loader import PluginCode, PluginLoadError, code_for, execute
from pipeline.plugins.logs import LogSink, capture_into, end_capture
from pipeline.plugins.meta import Meta
from pipeline.plugins.timeouts import call_with_time_limit

logger = structlog.get_logger(__name__)

SETUP_ATTEMPTS = 5
SETUP_RETRY_DELAYS = (0.5, 1, 2, 4)


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """An enabled plugin config as the runtime needs it, without holding model objects."""

    id: int
    project_id: int
    plugin_id: int
    plugin_name: str
    methods: frozenset[str]
    jobs: tuple[str, ...]
    scheduled_tasks: frozenset[str]
    config: Mapping[str, Any]  # read-only, shared by the snapshots of equal configs of one plugin
    version: tuple[str, str]

    @property
    def display_name(self) -> str:
        return f"{self.plugin_name} ({self.id})"

    @property
    def export(self) -> ExportSettings:
        return export_settings(self.config)


@dataclass(frozen=True)
class ProjectPlugins:
    chain: tuple[ConfigSnapshot, ...] = ()  # process_event, ascending order
    on_event: tuple[ConfigSnapshot, ...] = ()
    export_events: tuple[ConfigSnapshot, ...] = ()

    @property
    def after_storage(self) -> bool:
        return bool(self.on_event or self.export_events)


NO_PLUGINS = ProjectPlugins()
NO_ATTACHMENTS: Mapping[str, dict] = MappingProxyType({})  # `meta.attachments` of a plugin that takes none


@dataclass(slots=True)
class PluginInstance:
    """A config set up in this process. A built-in's `namespace` is its plugin's, shared by every
    config of that plugin version; a local or source plugin's is the config's own."""

    snapshot: ConfigSnapshot
    namespace: dict[str, Any]
    meta: Meta
    sink: LogSink
    torn_down: bool = False
    # A built-in whose plugin.json says `"leaves_event_unchanged": true`: its process_event returns
    # the event it was given, a new one or None, and never changes the one given (built-ins are
    # ours: tests/plugins/test_builtin_modules.py holds each that says so to it). The chain then
    # neither copies the event for it nor keeps what to undo (pipeline/plugins/chain.py).
    leaves_event_unchanged: bool = False

    @property
    def instance_id(self) -> str:
        return self.meta.instance_id

    def has(self, name: str) -> bool:
        return callable(self.namespace.get(name))

    def call(self, fn, args: tuple, what: str) -> Any:
        """Run one plugin callable within its limits, with print() captured; logs stored after."""
        with PluginCalls() as calls:
            return calls.call(self, fn, args, what)

    def method(self, name: str, *args: Any) -> Any:
        with PluginCalls() as calls:
            return calls.method(self, name, *args)


class PluginCalls:
    """Plugin calls made one after another from one frame, as a chain makes them over one event.
    What each call's guards cost once, the series pays once: the lock (held from the first call
    to the last, so no instance is torn down between them), the recursion limit's set-up and the
    time limit's setting. Each call still gets its own deadline, its own print capture and its
    own log flush, so a call's limits and logs are what they would be on its own."""

    __slots__ = ("recursion", "seconds")

    def __enter__(self) -> "PluginCalls":
        _lock.acquire()
        try:
            self.recursion = RecursionHeadroom().__enter__()
        except BaseException:
            _lock.release()
            raise
        self.seconds = hot_settings.get("PLUGIN_TIMEOUT_SECONDS")
        return self

    def __exit__(self, *_exc) -> None:
        try:
            self.recursion.__exit__()
        finally:
            _lock.release()

    def method(self, instance: PluginInstance, name: str, *args: Any) -> Any:
        what = f"{instance.snapshot.plugin_name}.{name}"
        return self.call(instance, instance.namespace[name], (*args, instance.meta), what)

    def call(self, instance: PluginInstance, fn, args: tuple, what: str) -> Any:
        sink = instance.sink
        capture = capture_into(sink)
        try:
            return call_with_time_limit(fn, args, self.seconds, what)
        finally:
            end_capture(capture)
            if sink.gathered():
                _flush_quietly(sink)


_lock = threading.RLock()
_projects: dict[int, tuple[float, ProjectPlugins]] = {}
_instances: OrderedDict[int, PluginInstance] = OrderedDict()  # least recently used first
_failures: dict[int, int] = {}
_codes: dict[int, "LoadedCode"] = {}
_shared_parts: dict[tuple[int, str], tuple] = {}
_configs: dict[tuple[int, bytes], Mapping[str, Any]] = {}


# --- project caches --------------------------------------------------------------------


def project_plugins(project_id: int) -> ProjectPlugins:
    """The project's enabled configs; cached per process (the ingestion hot path)."""
    hit = _projects.get(project_id)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    reload.ensure_listening()
    plugins = _build_project(project_id)
    _projects[project_id] = (time.monotonic() + settings.PLUGIN_CHAIN_CACHE_SECONDS, plugins)
    return plugins


def load_project_plugins(project_ids: Iterable[int]) -> None:
    """Cache the configs of those of these projects that are not cached, in one query: an
    ingestion batch asks for all its projects' at once rather than a query per project."""
    now = time.monotonic()
    missing = {project_id for project_id in project_ids if _projects.get(project_id, (0.0,))[0] <= now}
    if len(missing) < 2:  # project_plugins asks for one itself
        return
    reload.ensure_listening()
    rows: dict[int, list] = {project_id: [] for project_id in missing}
    for row in _enabled_configs(project_id__in=sorted(missing)).order_by("project_id", "order", "id"):
        rows[row.project_id].append(row)
    expires = time.monotonic() + settings.PLUGIN_CHAIN_CACHE_SECONDS
    for project_id, configs in rows.items():
        _projects[project_id] = (expires, _project_of(configs))


def _build_project(project_id: int) -> ProjectPlugins:
    return _project_of(_enabled_configs(project_id=project_id).order_by("order", "id"))


def _enabled_configs(**where):
    return PluginConfig.objects.filter(enabled=True, **where).select_related("plugin")


def _project_of(rows) -> ProjectPlugins:
    snapshots = [_snapshot(row) for row in rows]
    if not snapshots:
        return NO_PLUGINS
    for snapshot in snapshots:
        _retire_if_changed(snapshot)
    return ProjectPlugins(
        chain=tuple(s for s in snapshots if "process_event" in s.methods),
        on_event=tuple(s for s in snapshots if "on_event" in s.methods),
        export_events=tuple(s for s in snapshots if "export_events" in s.methods),
    )


def _snapshot(row) -> ConfigSnapshot:
    name, methods, jobs, scheduled_tasks, plugin_version = _plugin_parts(row.plugin)
    return ConfigSnapshot(
        id=row.id,
        project_id=row.project_id,
        plugin_id=row.plugin_id,
        plugin_name=name,
        methods=methods,
        jobs=jobs,
        scheduled_tasks=scheduled_tasks,
        config=_shared_config(row.plugin_id, row.config or {}),
        version=(row.updated_at.isoformat(), plugin_version),
    )


def _shared_config(plugin_id: int, config: dict) -> Mapping[str, Any]:
    """One read-only mapping for equal configs of a plugin (thousands of projects with a built-in
    mostly keep its defaults). The table restarts with the project caches, on every reload."""
    try:
        key = (plugin_id, orjson.dumps(config, option=orjson.OPT_SORT_KEYS))
    except TypeError:
        return MappingProxyType(dict(config))
    shared = _configs.get(key)
    if shared is None:
        shared = _configs[key] = MappingProxyType(dict(config))
    return shared


def _plugin_parts(plugin: Plugin) -> tuple:
    """What the snapshots of one plugin version have in common, made once and shared by them all
    (thousands of configs of a built-in would otherwise hold thousands of equal copies)."""
    version = plugin.updated_at.isoformat()
    parts = _shared_parts.get((plugin.pk, version))
    if parts is None:
        capabilities = plugin.capabilities or {}
        parts = (
            plugin.name,
            frozenset(capabilities.get("methods") or ()),
            tuple(capabilities.get("jobs") or ()),
            frozenset(capabilities.get("scheduled_tasks") or ()),
            version,
        )
        _shared_parts[(plugin.pk, version)] = parts
    return parts


def config_snapshot(plugin_config_id: int, *, enabled_only: bool = True) -> ConfigSnapshot | None:
    """A fresh snapshot of one config (for tasks, which carry only the config id)."""
    query = PluginConfig.objects.select_related("plugin").filter(pk=plugin_config_id)
    if enabled_only:
        query = query.filter(enabled=True)
    row = query.first()
    return None if row is None else _snapshot(row)


# --- instances ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadedCode:
    """A plugin's code as of one version of its row, kept in the process for its next configs.

    `shared` is a built-in's executed module: built-ins are ours, keep no module state (a test
    holds every one to that) and keep per-config state in `meta`, so one namespace serves every
    config. Local and source plugins are executed once per config: their module state is the
    config's own (see loader.py)."""

    version: str
    code: PluginCode
    shared: dict[str, Any] | None
    has_attachments: bool


def instance_for(snapshot: ConfigSnapshot) -> PluginInstance | None:
    """The live instance of this config version, set up on first use; None if setup failed."""
    current = _instances.get(snapshot.id)
    if current is not None and current.snapshot.version == snapshot.version and not current.torn_down:
        if current.snapshot is not snapshot:
            current.snapshot = snapshot  # the newer, equal snapshot: the older can be freed
        if hot_settings.get("PLUGIN_MAX_LIVE_INSTANCES") > 0:
            # No lock (a teardown on the reload thread may hold it); KeyError: torn down meanwhile.
            # Not contextlib.suppress: its object per call would cost more than the move.
            try:  # noqa: SIM105
                _instances.move_to_end(snapshot.id)
            except KeyError:
                pass
        return current
    with _lock:
        current = _instances.get(snapshot.id)
        if current is not None and current.snapshot.version == snapshot.version and not current.torn_down:
            return current
        if current is not None:
            _teardown(current)
        instance = _create(snapshot)
        if instance is not None:
            _instances[snapshot.id] = instance
            _evict_beyond(hot_settings.get("PLUGIN_MAX_LIVE_INSTANCES"))
        return instance


def _evict_beyond(limit: int) -> None:
    """Tear down the least recently used instances past `limit` (0: no limit). An evicted config
    is set up again on its next use, as after a reload."""
    while 0 < limit < len(_instances):
        _, oldest = _instances.popitem(last=False)
        _teardown(oldest)


def _create(snapshot: ConfigSnapshot) -> PluginInstance | None:
    instance_id = uuid.uuid4().hex
    sink = LogSink(snapshot.id, snapshot.project_id, instance_id)
    try:
        loaded = _code_of(snapshot)
        namespace = loaded.shared if loaded.shared is not None else execute(loaded.code)
    except Exception as exc:
        if is_outage(exc):
            raise
        reason = str(exc) if isinstance(exc, PluginLoadError) else f"{type(exc).__name__}: {exc}"
        disable_config(snapshot, f"the plugin could not be loaded: {reason}", exc, sink)
        return None
    attachments = (
        {
            a.key: {"file_name": a.file_name, "content_type": a.content_type, "contents": bytes(a.contents)}
            for a in PluginAttachment.objects.filter(plugin_config_id=snapshot.id)
        }
        if loaded.has_attachments
        else NO_ATTACHMENTS
    )
    meta = Meta(
        plugin_id=snapshot.plugin_id,
        plugin_config_id=snapshot.id,
        project_id=snapshot.project_id,
        instance_id=instance_id,
        # A built-in reads the shared, read-only config; a plugin of others gets its own copy.
        config=snapshot.config if loaded.shared is not None else dict(snapshot.config),
        attachments=attachments,
        job_names=snapshot.jobs or _job_names(namespace),
        sink=sink,
    )
    leaves_event_unchanged = loaded.shared is not None and loaded.code.manifest.get("leaves_event_unchanged") is True
    instance = PluginInstance(snapshot, namespace, meta, sink, leaves_event_unchanged=leaves_event_unchanged)
    if not run_setup(instance):
        return None
    sink.system("DEBUG", f"plugin instance {instance_id} set up in process {os.getpid()}")
    _flush_quietly(sink)
    return instance


def _code_of(snapshot: ConfigSnapshot) -> LoadedCode:
    """The plugin's code at the snapshot's plugin version: from this process's cache, or read
    (one query, two for a source plugin) when the version is new here. Code is cached under the
    version of the row it was read from, so a config of a changed plugin never gets the old code."""
    loaded = _codes.get(snapshot.plugin_id)
    if loaded is not None and loaded.version == snapshot.version[1]:
        return loaded
    plugin = Plugin.objects.get(pk=snapshot.plugin_id)
    code = code_for(plugin)
    loaded = LoadedCode(
        version=plugin.updated_at.isoformat(),
        code=code,
        shared=execute(code) if code.source_type == "builtin" else None,
        has_attachments=any(
            isinstance(field, dict) and field.get("type") == "attachment" for field in code.manifest.get("config") or ()
        ),
    )
    _codes[snapshot.plugin_id] = loaded
    return loaded


def _job_names(namespace: dict) -> tuple[str, ...]:
    jobs = namespace.get("jobs")
    return tuple(k for k, v in jobs.items() if callable(v)) if isinstance(jobs, dict) else ()


def run_setup(instance: PluginInstance, *, delays: tuple[float, ...] = SETUP_RETRY_DELAYS) -> bool:
    """setup_plugin with up to SETUP_ATTEMPTS attempts on RetryError; failure disables the config."""
    if not instance.has("setup_plugin"):
        return True
    for attempt in range(1, SETUP_ATTEMPTS + 1):
        try:
            instance.method("setup_plugin")
            return True
        except RetryError as exc:
            if attempt == SETUP_ATTEMPTS:
                disable_config(
                    instance.snapshot,
                    f"setup_plugin still asked for a retry after {SETUP_ATTEMPTS} attempts: {exc}",
                    exc,
                    instance.sink,
                )
                return False
            delay = delays[min(attempt - 1, len(delays) - 1)] * settings.PLUGIN_RETRY_DELAY_SCALE
            instance.sink.system(
                "WARN", f"setup_plugin asked for a retry (attempt {attempt} of {SETUP_ATTEMPTS}): {exc}"
            )
            _flush_quietly(instance.sink)
            time.sleep(delay)
        except Exception as exc:
            if is_outage(exc):
                raise
            disable_config(instance.snapshot, f"setup_plugin failed: {type(exc).__name__}: {exc}", exc, instance.sink)
            return False
    return False


def _teardown(instance: PluginInstance) -> None:
    """Run teardown_plugin once per instance, whatever asks for it and how often."""
    with _lock:
        if instance.torn_down:
            return
        instance.torn_down = True
        if _instances.get(instance.snapshot.id) is instance:
            del _instances[instance.snapshot.id]
        if not instance.has("teardown_plugin"):
            return
        try:
            instance.method("teardown_plugin")
        except Exception as exc:
            instance.sink.system("ERROR", f"teardown_plugin failed: {type(exc).__name__}: {exc}")
            _flush_quietly(instance.sink)
            logger.warning("teardown_plugin failed", plugin_config_id=instance.snapshot.id, error=str(exc))


def _retire_if_changed(snapshot: ConfigSnapshot) -> None:
    current = _instances.get(snapshot.id)
    if current is not None and current.snapshot.version != snapshot.version:
        _teardown(current)


def forget(*, plugin_config_id: int | None = None, plugin_id: int | None = None, everything: bool = False) -> None:
    """Drop cached projects and tear down the instances that a reload names (and, for a plugin,
    its cached code: a reload without a new version still loads the code anew)."""
    _projects.clear()
    _configs.clear()
    if everything:
        _codes.clear()
        _shared_parts.clear()
    elif plugin_id is not None:
        _codes.pop(plugin_id, None)
        for key in list(_shared_parts):  # a copy: the task thread may add to it meanwhile
            if key[0] == plugin_id:
                _shared_parts.pop(key, None)
    for instance in list(_instances.values()):
        if (
            everything
            or instance.snapshot.id == plugin_config_id
            or (plugin_id is not None and instance.snapshot.plugin_id == plugin_id)
        ):
            _teardown(instance)


def _forget_on_reload(message: dict) -> None:
    forget(
        plugin_config_id=message.get("plugin_config_id"),
        plugin_id=message.get("plugin_id"),
        everything=bool(message.get("everything")),
    )


reload.on_reload(_forget_on_reload)


def teardown_all() -> None:
    """On process shutdown."""
    forget(everything=True)


def loaded_instances() -> list[PluginInstance]:
    return list(_instances.values())


# --- errors, failures, auto-disable ------------------------------------------------------


def error_record(exc: BaseException, *, method: str, event: Any = None) -> dict:
    return {
        "name": type(exc).__name__,
        "message": f"{method}: {exc}",
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
        "event": _json_safe(event),
    }


def _json_safe(value: Any) -> Any:
    """`value` as the error's JSON can hold it: what JSON cannot (a set a plugin put in the
    event, say) as its repr."""
    try:
        return orjson.loads(orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS))
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)[:8000]


def record_failure(
    snapshot: ConfigSnapshot, exc: BaseException, *, method: str, event: Any = None, sink: LogSink | None = None
) -> None:
    """Store the error on the config and as an ERROR log entry; disable after too many in a row."""
    PluginConfig.objects.filter(pk=snapshot.id).update(error=error_record(exc, method=method, event=event))
    sink = sink or LogSink(snapshot.id, snapshot.project_id, "")
    sink.system("ERROR", f"{method} failed: {type(exc).__name__}: {exc}")
    _flush_quietly(sink)
    count = _failures.get(snapshot.id, 0) + 1
    _failures[snapshot.id] = count
    limit = settings.PLUGIN_AUTO_DISABLE_AFTER_FAILURES
    if limit > 0 and count >= limit:
        _failures.pop(snapshot.id, None)
        disable_config(
            snapshot, f"disabled automatically after {count} failed calls in a row; the last: {exc}", exc, sink
        )


def record_success(snapshot: ConfigSnapshot) -> None:
    if snapshot.id in _failures:
        del _failures[snapshot.id]


def disable_config(snapshot: ConfigSnapshot, reason: str, exc: BaseException | None, sink: LogSink) -> None:
    """Turn the config off, say why (on the config and in its log), and reload every worker."""
    error = error_record(exc, method="plugin") if exc is not None else {}
    error.update({"name": "PluginDisabled", "message": reason, "time": datetime.now(UTC).isoformat()})
    PluginConfig.objects.filter(pk=snapshot.id).update(enabled=False, error=error, updated_at=timezone.now())
    sink.system("ERROR", f"plugin config disabled: {reason}")
    _flush_quietly(sink)
    logger.warning("plugin config disabled", plugin_config_id=snapshot.id, reason=reason[:300])
    _projects.pop(snapshot.project_id, None)
    reload.publish_reload(plugin_config_id=snapshot.id, project_id=snapshot.project_id)


def _flush_quietly(sink: LogSink) -> None:
    try:
        sink.flush()
    except Exception as exc:
        if is_outage(exc):
            raise
        logger.exception("could not store plugin log entries", plugin_config_id=sink.plugin_config_id)
