"""Plugin code from its three sources, executed into a fresh namespace, and what it can do.

- `builtin`: a folder under pipeline/plugins/builtins/ (trusted, imported as Python).
- `local`: a folder under PLUGINS_DIR, put there by an operator (trusted, imported as Python).
- `source`: plugin.json and plugin.py stored in the database, run under RestrictedPython.

Every `execute` runs the module anew. The registry executes a local or source plugin once per
config, so two configs of one never share module state; a built-in once per plugin version, shared
by its configs (built-ins keep no module state: tests/plugins/test_builtin_modules.py).
"""

import importlib.util
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from pipeline.plugins.limits import call_within_limits
from pipeline.plugins.logs import ConsolePrint, route_stdout
from pipeline.plugins.manifest import ManifestError, parse_manifest
from pipeline.plugins.restricted import compile_source, restricted_globals

BUILTINS_DIR = Path(__file__).resolve().parent / "builtins"

METHODS = ("setup_plugin", "teardown_plugin", "process_event", "on_event", "export_events")
SCHEDULED_TASKS = ("run_every_minute", "run_every_hour", "run_every_day")

_sequence = itertools.count(1)


class PluginLoadError(Exception):
    """The plugin's files cannot be found, parsed or executed; the message says which and why."""


@dataclass(frozen=True)
class PluginCode:
    """What a plugin is made of, whatever its source."""

    source_type: str
    manifest: dict
    main_path: Path | None  # trusted plugins: the file to import
    main_source: str | None  # source plugins: the code to run restricted
    label: str  # for messages and module names


def builtin_names() -> list[str]:
    return sorted(p.name for p in BUILTINS_DIR.iterdir() if (p / "plugin.json").is_file())


def builtin_folder(name: str) -> Path:
    if name not in builtin_names():
        raise PluginLoadError(f"there is no built-in plugin {name!r}; GET /api/plugins/builtins/ lists them")
    return BUILTINS_DIR / name


def local_folder(path: str) -> Path:
    """The folder of a local plugin; it must be inside PLUGINS_DIR and hold a plugin.json."""
    root = Path(settings.PLUGINS_DIR).resolve()
    folder = (root / str(path)).resolve()
    if not str(path).strip() or (folder != root and root not in folder.parents):
        raise PluginLoadError(f"path {path!r} must name a folder inside PLUGINS_DIR ({root})")
    if not (folder / "plugin.json").is_file():
        raise PluginLoadError(f"{folder} has no plugin.json; a local plugin is a folder under PLUGINS_DIR with one")
    return folder


def code_from_folder(source_type: str, folder: Path) -> PluginCode:
    try:
        manifest = parse_manifest((folder / "plugin.json").read_text())
    except OSError as exc:
        raise PluginLoadError(f"cannot read {folder / 'plugin.json'}: {exc}") from None
    except ManifestError as exc:
        raise PluginLoadError(str(exc)) from None
    main = folder / manifest["main"]
    if not main.is_file():
        raise PluginLoadError(f"{main} is missing; plugin.json `main` names the plugin's Python file")
    return PluginCode(source_type, manifest, main, None, folder.name)


def code_from_source(files: dict[str, str], label: str) -> PluginCode:
    if "plugin.json" not in files:
        raise PluginLoadError("a source plugin needs a plugin.json file")
    try:
        manifest = parse_manifest(files["plugin.json"])
    except ManifestError as exc:
        raise PluginLoadError(str(exc)) from None
    main = manifest["main"]
    if not isinstance(files.get(main), str):
        raise PluginLoadError(f"a source plugin needs its main file {main!r} (plugin.json `main`)")
    return PluginCode("source", manifest, None, files[main], label)


def code_for(plugin) -> PluginCode:
    """The code of a Plugin row (a model instance with `source_files` for source plugins)."""
    if plugin.source_type == "builtin":
        return code_from_folder("builtin", builtin_folder(plugin.builtin))
    if plugin.source_type == "local":
        return code_from_folder("local", local_folder(plugin.path))
    files = {f.filename: f.source for f in plugin.source_files.all()}
    return code_from_source(files, f"plugin-{plugin.pk}")


def execute(code: PluginCode, seconds: float | None = None, setting: str = "PLUGIN_TIMEOUT_SECONDS") -> dict[str, Any]:
    """Run the module once, within the limits (time: `seconds`, by default PLUGIN_TIMEOUT_SECONDS),
    and return its namespace."""
    seconds = settings.PLUGIN_TIMEOUT_SECONDS if seconds is None else seconds
    module_name = f"bklog_plugin_{code.source_type}_{_safe(code.label)}_{next(_sequence)}"
    what = f"loading plugin {code.manifest['name']!r}"
    if code.source_type == "source":
        try:
            compiled = compile_source(code.main_source or "", f"<source plugin {code.label}: {code.manifest['main']}>")
        except Exception as exc:
            raise PluginLoadError(f"the plugin's code does not compile: {exc}") from None
        namespace = restricted_globals(module_name, ConsolePrint)
        call_within_limits(exec, (compiled, namespace), seconds, what, setting)
        return namespace
    route_stdout()
    spec = importlib.util.spec_from_file_location(module_name, code.main_path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"cannot import {code.main_path}")
    module = importlib.util.module_from_spec(spec)
    call_within_limits(spec.loader.exec_module, (module,), seconds, what, setting)
    return vars(module)


def capabilities(namespace: dict[str, Any]) -> dict[str, list[str]]:
    """{"methods", "jobs", "scheduled_tasks"}: what the module defines, as docs/contracts.md#plugin-api names it."""
    jobs = namespace.get("jobs")
    return {
        "methods": [name for name in METHODS if callable(namespace.get(name))],
        "jobs": sorted(k for k, v in jobs.items() if isinstance(k, str) and callable(v))
        if isinstance(jobs, dict)
        else [],
        "scheduled_tasks": [name for name in SCHEDULED_TASKS if callable(namespace.get(name))],
    }


def inspect_code(code: PluginCode) -> dict[str, list[str]]:
    """Execute the code once to detect its capabilities; any failure is a PluginLoadError."""
    try:
        namespace = execute(code)
    except PluginLoadError:
        raise
    except Exception as exc:
        raise PluginLoadError(f"the plugin fails when loaded: {type(exc).__name__}: {exc}") from None
    return capabilities(namespace)


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)[:40]
