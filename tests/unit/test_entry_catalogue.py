"""The published entry catalogue (docs/entry-codes.md) and the codes the sync raises agree (SPEC A5).

Usage is read from the source with ``ast``: a code counts as used where a module of the package
refers to it through the entries module (``codes.PARTNER_MISSING``, ``entries.ABN_INVALID``) or
imports it by name. Codes declared for a purpose no code path serves yet must be listed in
``RESERVED`` with the reason, so a dead code is a decision rather than an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from xpm_sync.domain import entries
from xpm_sync.domain.entries import CATALOGUE, EntryKind

from scripts import entry_catalogue

PACKAGE = Path(entries.__file__).resolve().parent.parent
ENTRIES_MODULE = "xpm_sync.domain.entries"

# Declared codes that no module raises yet, each with why it stays in the catalogue.
RESERVED: dict[str, str] = {}


def _python_files() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path != Path(entries.__file__).resolve())


def _references(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Names used from the entries module, and string literals passed as ``code=``."""
    aliases: set[str] = set()
    names: set[str] = set()
    literal_codes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "xpm_sync.domain":
            aliases |= {alias.asname or alias.name for alias in node.names if alias.name == "entries"}
        elif isinstance(node, ast.Import):
            aliases |= {alias.asname for alias in node.names if alias.name == ENTRIES_MODULE and alias.asname}
        elif isinstance(node, ast.ImportFrom) and node.module == ENTRIES_MODULE:
            # Upper-case names that are entry kinds: the module also exports limits (MAX_LABEL_CHARS).
            names |= {
                alias.name
                for alias in node.names
                if alias.name.isupper() and not isinstance(getattr(entries, alias.name, None), int)
            }
        elif isinstance(node, ast.keyword) and node.arg == "code" and isinstance(node.value, ast.Constant):
            literal_codes.add(str(node.value.value))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.isupper()
        ):
            names.add(node.attr)
    return names, literal_codes


def _used() -> dict[str, set[str]]:
    """Entry names (and literal codes) referenced anywhere in the package -> the files using them."""
    used: dict[str, set[str]] = {}
    for path in _python_files():
        names, literal_codes = _references(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for name in names | literal_codes:
            used.setdefault(name, set()).add(str(path.relative_to(PACKAGE)))
    return used


def test_the_published_catalogue_is_up_to_date() -> None:
    # Given the catalogue declared in entries.py, when the doc is rendered, it matches the committed file
    assert entry_catalogue.DOC.read_text(encoding="utf-8") == entry_catalogue.render(), (
        f"docs/entry-codes.md is stale: {entry_catalogue.REGENERATE}"
    )


def test_check_mode_reports_a_stale_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "entry-codes.md"
    stale.write_text("# Entry codes\n", encoding="utf-8")
    monkeypatch.setattr(entry_catalogue, "DOC", stale)
    monkeypatch.setattr(entry_catalogue, "ROOT", tmp_path)

    assert entry_catalogue.main(["--check"]) == 1
    assert entry_catalogue.main(["--write"]) == 0
    assert entry_catalogue.main(["--check"]) == 0


def test_every_code_raised_is_in_the_catalogue() -> None:
    unknown = {
        name: files
        for name, files in _used().items()
        if not isinstance(getattr(entries, name, None), EntryKind) or name not in CATALOGUE
    }

    assert unknown == {}, "entry codes used but not declared with _kind() in entries.py"


def test_every_catalogue_code_is_raised_somewhere_or_reserved() -> None:
    unused = set(CATALOGUE) - set(_used()) - set(RESERVED)

    assert unused == set(), "declared entry codes that nothing raises: use them or list them in RESERVED"
    assert set(RESERVED) <= set(CATALOGUE), "RESERVED names codes that are not in the catalogue"


def test_each_code_is_declared_under_its_own_name() -> None:
    # codes.X must raise code "X", or the usage scan above (and a reader) would be misled.
    mismatched = {
        name: value.code
        for name, value in vars(entries).items()
        if isinstance(value, EntryKind) and value.code != name
    }

    assert mismatched == {}
    assert all(CATALOGUE[code] is getattr(entries, code) for code in CATALOGUE)


def test_every_code_has_a_cause_and_a_suggestion() -> None:
    for kind in CATALOGUE.values():
        assert kind.cause.strip().endswith("."), kind.code
        assert kind.suggestion.strip(), kind.code
