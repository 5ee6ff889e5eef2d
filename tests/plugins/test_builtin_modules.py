"""Built-ins share one executed module between all their configs (pipeline/plugins/registry.py
`LoadedCode`), so a built-in may keep no module state: what one config's call could change, every
config would see. This holds each built-in's module to it, statement by statement. And a built-in
whose plugin.json says `leaves_event_unchanged` is given the chain's event without a copy
(pipeline/plugins/chain.py): this holds its process_event to leaving that event as it was."""

import ast
import copy
import re
import textwrap
import types
from types import SimpleNamespace

import pytest

from pipeline.plugins.loader import BUILTINS_DIR, builtin_names, code_from_folder, execute

IMMUTABLE_SCALARS = (type(None), bool, int, float, complex, str, bytes, range, re.Pattern)


def is_immutable(value) -> bool:
    if isinstance(value, IMMUTABLE_SCALARS):
        return True
    if isinstance(value, tuple | frozenset):
        return all(is_immutable(item) for item in value)
    if isinstance(value, types.MappingProxyType):
        return all(is_immutable(item) for item in value.values())
    if isinstance(value, types.FunctionType):
        return function_problem(value) is None
    return isinstance(value, types.BuiltinFunctionType)


def function_problem(fn: types.FunctionType) -> str | None:
    if fn.__closure__:
        return "closes over variables"
    defaults = (*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values())
    if not all(is_immutable(value) for value in defaults):
        return "has a mutable default argument"
    return None


def module_state_problems(source: str, namespace: dict) -> list[str]:
    """What in this module is state a call could change: top-level statements may only import,
    bind immutable values (numbers, strings, tuples, frozensets, compiled patterns, read-only
    mappings, functions) and define functions that declare nothing `global`."""
    problems = []
    for statement in ast.parse(source).body:
        line = f"line {statement.lineno}"
        if isinstance(statement, ast.Import | ast.ImportFrom):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # the docstring
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(statement):
                if isinstance(node, ast.Global | ast.Nonlocal):
                    problems.append(f"{line}: {statement.name} declares {', '.join(node.names)} global")
                if isinstance(node, ast.Name) and node.id in ("globals", "vars"):
                    problems.append(f"{line}: {statement.name} calls {node.id}()")
            problem = function_problem(namespace[statement.name])
            if problem:
                problems.append(f"{line}: {statement.name} {problem}")
            continue
        targets = statement.targets if isinstance(statement, ast.Assign) else [getattr(statement, "target", None)]
        if isinstance(statement, ast.Assign | ast.AnnAssign) and all(isinstance(t, ast.Name) for t in targets):
            for target in targets:
                if not is_immutable(namespace[target.id]):
                    kind = type(namespace[target.id]).__name__
                    problems.append(f"{line}: {target.id} is a {kind}, which a call could change")
            continue
        problems.append(f"{line}: a top-level {type(statement).__name__} statement")
    return problems


@pytest.mark.parametrize("name", builtin_names())
def test_a_builtin_keeps_no_module_state(name):
    code = code_from_folder("builtin", BUILTINS_DIR / name)
    problems = module_state_problems(code.main_path.read_text(), execute(code))
    assert problems == [], f"{name}: built-ins share their module; keep per-config state in meta.state"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("SEEN = set()\n", "line 1: SEEN is a set, which a call could change"),
        ("TABLE = {'a': 1}\n", "line 1: TABLE is a dict, which a call could change"),
        ("PAIRS = (('a', []),)\n", "line 1: PAIRS is a tuple, which a call could change"),
        ("N = 0\ndef f():\n    global N\n    N += 1\n", "line 2: f declares N global"),
        ("def f(seen=[]):\n    return seen\n", "line 1: f has a mutable default argument"),
        ("class Counter:\n    n = 0\n", "line 1: a top-level ClassDef statement"),
        ("def f():\n    globals()['n'] = 1\n", "line 1: f calls globals()"),
    ],
)
def test_the_check_finds_module_state(source, problem):
    namespace: dict = {}
    exec(compile(textwrap.dedent(source), "<test>", "exec"), namespace)  # noqa: S102 - the examples above
    assert problem in module_state_problems(source, namespace)


# Configs to run each built-in that says `leaves_event_unchanged` with: one that changes events.
LEAVES_EVENT_CONFIGS = {
    "property_filter": [{"properties": "email, $ip, plan, seen"}, {"properties": ""}],
    "taxonomy_standardiser": [
        {"naming_convention": convention}
        for convention in ("camelCase", "PascalCase", "snake_case", "kebab-case", "spaces in between")
    ],
}
EVENTS = [
    {
        "event": "Product Viewed",
        "distinct_id": "user-1",
        "team_id": 1,
        "ip": "10.0.0.1",
        "properties": {"email": "a@example.com", "plan": "pro", "cart": {"items": [1, 2]}, "$ip": "10.0.0.1"},
        "$set": {"plan": "pro", "seen": ["home"]},
        "$set_once": {"first_seen": "2026-12-05"},
    },
    {"event": "$pageview", "distinct_id": "user-2", "team_id": 1, "properties": {}},
    {"event": "signed_up", "distinct_id": "user-3", "team_id": 1, "properties": {"plan": "free"}, "$set": None},
]


def _leaving_event_unchanged() -> list[str]:
    return [
        name
        for name in builtin_names()
        if code_from_folder("builtin", BUILTINS_DIR / name).manifest.get("leaves_event_unchanged") is True
    ]


def test_the_builtins_that_leave_their_event_unchanged_are_those_checked_here():
    assert sorted(_leaving_event_unchanged()) == sorted(LEAVES_EVENT_CONFIGS)


@pytest.mark.parametrize("name", sorted(LEAVES_EVENT_CONFIGS))
def test_a_builtin_that_says_it_leaves_its_event_unchanged_does(name):
    namespace = execute(code_from_folder("builtin", BUILTINS_DIR / name))
    changed = 0
    for config in LEAVES_EVENT_CONFIGS[name]:
        meta = SimpleNamespace(config=config, state={})
        if "setup_plugin" in namespace:
            namespace["setup_plugin"](meta)
        for event in EVENTS:
            given = copy.deepcopy(event)
            output = namespace["process_event"](given, meta)
            assert given == event, f"{name} {config}: process_event changed the event it was given"
            changed += output != event
    assert changed, f"{name}: no config changed any event; the check above then proves nothing"
