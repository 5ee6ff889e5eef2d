"""Source plugins (code stored in the database) run under RestrictedPython.

What such code can reach: the safe builtins, a short allow-list of standard modules (each seen
through a proxy that hides submodules and private names, so `json.codecs.open` is out of reach),
`RetryError`, and whatever `meta` offers. There is no `open`, no `__import__` beyond the
allow-list, no attribute starting with `_`. Each refusal raises an error that says what to use
instead, and `print()` goes to the plugin's CONSOLE log.
"""

import builtins
import importlib
import operator
import types
import warnings
from collections.abc import Callable
from typing import Any

from RestrictedPython import compile_restricted_exec, limited_builtins, safe_builtins, utility_builtins
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr,
    safer_getattr_raise,
)

from pipeline.plugins import api as plugin_api
from pipeline.plugins.timeouts import bounded_sleep

ALLOWED_MODULES = (
    "base64",
    "collections",
    "datetime",
    "decimal",
    "functools",
    "hashlib",
    "hmac",
    "itertools",
    "json",
    "math",
    "random",
    "re",
    "statistics",
    "string",
    "time",
    "urllib.parse",
    "uuid",
    "pipeline.plugins.api",
)

_EXTRA_BUILTINS = (
    "all",
    "any",
    "bytes",
    "dict",
    "enumerate",
    "filter",
    "format",
    "frozenset",
    "hasattr",
    "list",
    "map",
    "max",
    "min",
    "next",
    "reversed",
    "set",
    "sorted",
    "sum",
    "tuple",
    "zip",
)


class SourcePluginError(Exception):
    """The source plugin's code does not compile under the restrictions."""


def _refuse_open(*_args, **_kwargs):
    raise PermissionError(
        "source plugins cannot open files; use meta.attachments for uploaded files and meta.storage "
        "or meta.cache to keep data"
    )


def _guarded_import(name: str, globals=None, locals=None, fromlist=(), level: int = 0):
    if level != 0:
        raise ImportError("relative imports are not allowed in source plugins")
    if name not in ALLOWED_MODULES:
        allowed = ", ".join(m for m in ALLOWED_MODULES if m != "pipeline.plugins.api")
        raise ImportError(
            f"import of {name!r} is not allowed in source plugins; allowed modules: {allowed} "
            "(and pipeline.plugins.api). Network and files are reached only through meta."
        )
    if "." in name and not fromlist:
        raise ImportError(f"write `from {name} import ...` instead of `import {name}` in source plugins")
    return _proxies()[name]


class ModuleProxy:
    """A module as restricted code sees it: public, non-module attributes only."""

    def __init__(self, module: types.ModuleType, overrides: dict[str, Any] | None = None):
        public = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
        self._names = {
            name: getattr(module, name)
            for name in public
            if hasattr(module, name) and not isinstance(getattr(module, name), types.ModuleType)
        }
        self._names.update(overrides or {})
        self._module_name = module.__name__

    def __getattr__(self, name: str):
        try:
            return self.__dict__["_names"][name]
        except KeyError:
            raise AttributeError(f"module {self.__dict__['_module_name']!r} has no attribute {name!r} here") from None


_PROXIES: dict[str, ModuleProxy] = {}


def _proxies() -> dict[str, ModuleProxy]:
    if not _PROXIES:
        for name in ALLOWED_MODULES:
            overrides = {"sleep": bounded_sleep} if name == "time" else None
            _PROXIES[name] = ModuleProxy(importlib.import_module(name), overrides)
    return _PROXIES


def _inplacevar(op: str, x, y):
    operators: dict[str, Callable] = {
        "+=": operator.iadd,
        "-=": operator.isub,
        "*=": operator.imul,
        "/=": operator.itruediv,
        "//=": operator.ifloordiv,
        "%=": operator.imod,
        "**=": operator.ipow,
        "|=": operator.ior,
        "&=": operator.iand,
        "^=": operator.ixor,
    }
    try:
        return operators[op](x, y)
    except KeyError:
        raise SyntaxError(f"operator {op} is not allowed in source plugins") from None


def _restricted_builtins() -> dict[str, Any]:
    allowed = {**safe_builtins, **limited_builtins, **utility_builtins}
    for name in _EXTRA_BUILTINS:
        allowed[name] = getattr(builtins, name)
    allowed["__import__"] = _guarded_import
    allowed["open"] = _refuse_open
    allowed["getattr"] = safer_getattr
    allowed["RetryError"] = plugin_api.RetryError
    return allowed


def compile_source(source: str, filename: str):
    """Compile restricted code, or raise SourcePluginError with every problem and its line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        result = compile_restricted_exec(source, filename=filename)
    if result.errors or result.code is None:
        raise SourcePluginError("; ".join(result.errors) or "the code does not compile")
    return result.code


def restricted_globals(module_name: str, print_factory: Callable[..., Any]) -> dict[str, Any]:
    """Fresh globals for one source plugin module. `print_factory` is RestrictedPython's `_print_`."""
    return {
        "__builtins__": _restricted_builtins(),
        "__name__": module_name,
        "__metaclass__": type,
        "_getattr_": safer_getattr_raise,
        "_getitem_": operator.getitem,
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": full_write_guard,
        "_inplacevar_": _inplacevar,
        "_print_": print_factory,
        "RetryError": plugin_api.RetryError,
    }
