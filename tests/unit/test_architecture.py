"""The house keeps its shape (docs/ARCHITECTURE.md): dependencies run one way, the domain stays pure,
handlers stay thin, and the table "where each SPEC rule lives" names code that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "layers" / "shared" / "xpm_sync"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
RULE_REFERENCE = re.compile(r"`(xpm_sync/[\w/]+\.py)::([\w.]+)`")

# What each layer may not import: nothing above it, and (for the domain) nothing that does I/O.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "domain": (
        "xpm_sync.adapters",
        "xpm_sync.sync",
        "xpm_sync.api",
        "xpm_sync.composition",
        "xpm_sync.observability",
        "xpm_sync.settings",
        "boto3",
        "botocore",
        "httpx",
        "os",
        "aws_lambda_powertools",
    ),
    "adapters": ("xpm_sync.sync", "xpm_sync.api", "xpm_sync.composition"),
    "sync": ("xpm_sync.api", "xpm_sync.composition"),
    "api": ("xpm_sync.composition",),
}
# A handler's functions parse, call and shape: past this many lines, it is doing the domain's work.
HANDLER_FUNCTION_LINES = 40


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_each_layer_imports_nothing_above_it(layer: str) -> None:
    wrong = {
        str(path.relative_to(PACKAGE)): sorted(
            name
            for name in _imports(path)
            if any(name == banned or name.startswith(f"{banned}.") for banned in FORBIDDEN[layer])
        )
        for path in _modules(layer)
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_domain_reads_no_environment() -> None:
    readers = [
        str(path.relative_to(PACKAGE))
        for path in _modules("domain")
        if re.search(r"\b(os\.environ|getenv)\b", path.read_text(encoding="utf-8"))
    ]
    assert readers == []


@pytest.mark.parametrize(
    "handler", sorted((ROOT / "functions").glob("*/app.py")), ids=lambda p: p.parent.name
)
def test_handlers_stay_thin(handler: Path) -> None:
    tree = ast.parse(handler.read_text(encoding="utf-8"))
    long = {
        node.name: (node.end_lineno or node.lineno) - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > HANDLER_FUNCTION_LINES
    }
    assert long == {}


def _defined(path: Path, dotted: str) -> bool:
    """Whether ``dotted`` (a function, class, constant, or Class.member) is defined in the module."""
    scope: list[ast.stmt] = ast.parse(path.read_text(encoding="utf-8")).body
    for part in dotted.split("."):
        match = None
        for node in scope:
            names: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [target.id for target in node.targets if isinstance(target, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            if part in names:
                match = node
                break
        if match is None:
            return False
        scope = match.body if isinstance(match, ast.ClassDef) else []
    return True


def test_the_spec_rule_table_names_code_that_exists() -> None:
    references = RULE_REFERENCE.findall(ARCHITECTURE.read_text(encoding="utf-8"))
    assert len(references) >= 40, "the table 'where each SPEC rule lives' is gone"
    missing = [
        f"{path}::{name}"
        for path, name in references
        if not (PACKAGE.parent / path).is_file() or not _defined(PACKAGE.parent / path, name)
    ]
    assert missing == []


def test_the_rule_table_check_finds_a_name_that_does_not_exist(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("class Kept:\n    def member(self) -> None: ...\n\ndef function() -> None: ...\n")

    assert _defined(module, "Kept.member")
    assert _defined(module, "function")
    assert not _defined(module, "Kept.gone")
    assert not _defined(module, "gone")
