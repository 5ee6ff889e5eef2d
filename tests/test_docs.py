"""The documentation keeps its promises: the README is a front page with the two commands on
top, every setting is in its configuration table, every link between the pages lands on a
heading, and the code cites the project's own docs/contracts.md, never a document outside the
repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CITING = ["bklog_app", "pipeline", "tests", "bench", "chaos", "support-files", "devservers"]
SKIPPED_DIRS = {"node_modules", "build", "__pycache__"}
CODE_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".hcl", ".conf"}


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def code_files():
    for top in CITING:
        for path in (ROOT / top).rglob("*"):
            if path.suffix in CODE_SUFFIXES and not SKIPPED_DIRS & set(path.parts) and path.is_file():
                yield path
    yield ROOT / "Makefile"


def test_the_readme_starts_with_the_two_commands_and_stays_a_front_page():
    text = README.read_text()
    first_block = re.search(r"^```\w*\n(.*?)^```", text, flags=re.S | re.M)
    assert first_block and text[: first_block.start()].count("\n") < 5, "the README opens with the two commands"
    assert "make run" in first_block.group(1) and "make test" in first_block.group(1)
    assert text.count("\n") <= 350, "the README is a front page: manuals go in docs/"


def test_every_setting_is_in_the_configuration_table():
    settings = (ROOT / "bklog_app" / "settings.py").read_text()
    read = set(re.findall(r"env(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]+)\"", settings))
    read |= set(re.findall(r"environ(?:\.get\(|\[)\s*\"([A-Z][A-Z0-9_]+)\"", settings))
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split(" | ")[0])
    }
    assert read, "no setting found: the pattern no longer matches settings.py"
    assert read - documented == set()


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_links_between_pages_land_on_a_file_and_heading(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert broken == []


def test_code_cites_sections_that_exist():
    pages = {page.name: anchors(page) for page in DOCS.glob("*.md")}
    broken = []
    for path in code_files():
        for page, anchor in re.findall(r"docs/([\w-]+\.md)#([\w-]+)", path.read_text(errors="replace")):
            if anchor not in pages.get(page, set()):
                broken.append(f"{path.relative_to(ROOT)}: docs/{page}#{anchor}")
    assert broken == []


def test_code_cites_no_document_outside_the_repository():
    citing = [
        str(path.relative_to(ROOT))
        for path in code_files()
        if re.search(r"SPEC ?(§|section|vectors|schedule)|SPEC\.md", path.read_text(errors="replace"))
    ]
    assert citing == []
