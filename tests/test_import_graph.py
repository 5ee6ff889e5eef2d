"""pipeline/ has no import circle, imports inside functions included.

Work code that queued its own follow-up tasks once tied the plugin runtime into a circle of nine
modules, held together by imports inside functions. ruff's PLC0415 keeps imports at module level
(pyproject.toml) and `lint-imports` checks the layering (.importlinter); this checks the rest: no
module of pipeline/ reaches itself again through what it imports.
"""

import grimp
import pytest


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("pipeline", cache_dir=None)


def circles(graph) -> list[tuple[str, ...]]:
    """For each import that closes a circle, the circle: the import, then the way back."""
    found = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                found.append((importer, *back))
    return found


def test_pipeline_has_no_import_circle(graph):
    assert {"pipeline.plugins.tasks", "pipeline.exports.tasks"} <= graph.modules  # the real package
    assert circles(graph) == []


def test_imports_inside_functions_count(graph, tmp_path, monkeypatch):
    """The check sees an import made inside a function (what the old circles hid behind)."""
    package = tmp_path / "circular"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "work.py").write_text("def run():\n    from circular import tasks\n")
    (package / "tasks.py").write_text("from circular import work\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert circles(grimp.build_graph("circular", cache_dir=None)) == [
        ("circular.tasks", "circular.work", "circular.tasks"),
        ("circular.work", "circular.tasks", "circular.work"),
    ]
