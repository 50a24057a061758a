"""Generate layers/shared/requirements.txt from pyproject.toml, the one source of dependencies.

SAM's python builder installs the layer from that file, so it must list exactly
``[project].dependencies``. ``--write`` regenerates it; ``--check`` exits 1 when it is stale.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
REQUIREMENTS = ROOT / "layers" / "shared" / "requirements.txt"

HEADER = (
    "# Generated from pyproject.toml [project].dependencies by scripts/requirements.py: do not edit.\n"
    "# Regenerate with `make requirements`.\n"
)


def render(pyproject: Path = PYPROJECT) -> str:
    """The requirements file that pyproject.toml calls for."""
    with pyproject.open("rb") as stream:
        dependencies = tomllib.load(stream)["project"]["dependencies"]
    return HEADER + "".join(f"{dependency}\n" for dependency in dependencies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the requirements file")
    mode.add_argument("--check", action="store_true", help="exit 1 if the requirements file is stale")
    args = parser.parse_args(argv)

    expected = render()
    if args.write:
        REQUIREMENTS.write_text(expected, encoding="utf-8")
        return 0
    current = REQUIREMENTS.read_text(encoding="utf-8") if REQUIREMENTS.exists() else ""
    if current != expected:
        print(f"{REQUIREMENTS} is stale: run `make requirements`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
