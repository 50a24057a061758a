"""The command line the generators of committed files share: ``--write`` or ``--check``.

``--write`` regenerates the files; ``--check`` names each committed file that differs from what
would be written (a missing one too) and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path


def write_or_check(
    argv: list[str] | None,
    description: str | None,
    files: Mapping[Path, Callable[[], str]],
    root: Path,
    regenerate: str,
) -> int:
    """Write or check ``files`` (each path with the function rendering its text), named relative
    to ``root``; ``regenerate`` tells how to repair a stale file."""

    def shown(path: Path) -> str:
        return str(path.relative_to(root) if path.is_relative_to(root) else path)

    names = ", ".join(shown(path) for path in files)
    parser = argparse.ArgumentParser(description=description)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"regenerate {names}")
    mode.add_argument("--check", action="store_true", help=f"exit 1 if stale: {names}")
    args = parser.parse_args(argv)

    expected = {path: render() for path, render in files.items()}
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
        print(f"{shown(path)} is stale: {regenerate}", file=sys.stderr)
    return 1 if stale else 0
