"""Generate the layer's requirement files from pyproject.toml and requirements/dev.lock.

``layers/shared/requirements.txt`` lists exactly ``[project].dependencies``; ``constraints.txt``
beside it pins every package to the version in ``requirements/dev.lock``, so the layer that
``sam build`` installs (layers/shared/Makefile) has the transitive versions the tests ran with.
Both live in the layer's folder because SAM builds from a copy of that folder alone.
``--write`` regenerates them; ``--check`` exits 1 when either is stale.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from scripts.generated_files import write_or_check

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
REQUIREMENTS = ROOT / "layers" / "shared" / "requirements.txt"
CONSTRAINTS = ROOT / "layers" / "shared" / "constraints.txt"
LOCK = ROOT / "requirements" / "dev.lock"

HEADER = (
    "# Generated from pyproject.toml [project].dependencies by scripts/requirements.py: do not edit.\n"
    "# Regenerate with `make requirements`.\n"
)


def render(pyproject: Path = PYPROJECT) -> str:
    """The requirements file that pyproject.toml calls for."""
    with pyproject.open("rb") as stream:
        dependencies = tomllib.load(stream)["project"]["dependencies"]
    return HEADER + "".join(f"{dependency}\n" for dependency in dependencies)


def render_constraints(lock: Path = LOCK) -> str:
    """The lock's pins, as pip constraints: they fix versions without asking for anything."""
    pins = [line.strip() for line in lock.read_text(encoding="utf-8").splitlines()]
    header = HEADER.replace("pyproject.toml [project].dependencies", "requirements/dev.lock")
    return header + "".join(f"{pin}\n" for pin in pins if pin and not pin.startswith("#"))


def main(argv: list[str] | None = None) -> int:
    files = {REQUIREMENTS: render, CONSTRAINTS: render_constraints}
    return write_or_check(argv, __doc__, files, ROOT, "run `make requirements`")


if __name__ == "__main__":
    sys.exit(main())
