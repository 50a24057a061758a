"""Generate the layer's requirement files from pyproject.toml and requirements/dev.lock.

``layers/shared/requirements.txt`` lists exactly ``[project].dependencies``; ``constraints.txt``
beside it pins every package to the version in ``requirements/dev.lock``, so the layer that
``sam build`` installs (layers/shared/Makefile) has the transitive versions the tests ran with.
Both live in the layer's folder because SAM builds from a copy of that folder alone.
``--write`` regenerates them; ``--check`` exits 1 when either is stale.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

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
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the requirements file")
    mode.add_argument("--check", action="store_true", help="exit 1 if the requirements file is stale")
    args = parser.parse_args(argv)

    expected = {REQUIREMENTS: render(), CONSTRAINTS: render_constraints()}
    if args.write:
        for path, text in expected.items():
            path.write_text(text, encoding="utf-8")
        return 0
    stale = [
        path
        for path, text in expected.items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]
    for path in stale:
        print(f"{path} is stale: run `make requirements`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
