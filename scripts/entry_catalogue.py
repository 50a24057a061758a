"""Generate docs/entry-codes.md from ``xpm_sync.domain.entries.CATALOGUE``, the one list of entry codes.

Support staff and admins read the published catalogue; the code raises entries from the same
declarations, so the two cannot drift. ``--write`` regenerates the file; ``--check`` exits 1 when
it is stale. Run it from the repository root with the layer on the path:
``PYTHONPATH=layers/shared python -m scripts.entry_catalogue --write``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xpm_sync.domain.entries import CATALOGUE, EntryKind

from scripts.generated_files import write_or_check

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "entry-codes.md"

REGENERATE = "run `PYTHONPATH=layers/shared python -m scripts.entry_catalogue --write`"
ENTITY_SECTIONS = (
    ("run", "Run level", "The run could not complete (status `failed`), or something about the run itself."),
    ("user", "Users (XPM staff)", "One staff member could not be synced, or was synced with a caveat."),
    ("client", "Clients", "One client could not be synced, or was synced with a caveat."),
)

HEADER = """\
# Entry codes

<!-- Generated from layers/shared/xpm_sync/domain/entries.py by scripts/entry_catalogue.py: do not edit.
     Regenerate with `make docs`. -->

Every problem a sync run meets is recorded as an entry in the run's error log (SPEC A5), shown in
Sync Monitoring and logged as JSON in CloudWatch Logs. An `error` means the record (or, at run
level, the run) was not synced; a `warning` means it was synced but something needs a look.
"""


def _cell(text: str) -> str:
    # A pipe would end the table cell early; a line break would end the row.
    return " ".join(text.split()).replace("|", "\\|")


def render(catalogue: dict[str, EntryKind] = CATALOGUE) -> str:
    """The Markdown catalogue, grouped by entity, codes in declaration order."""
    known = {entity for entity, _, _ in ENTITY_SECTIONS}
    strays = sorted(code for code, kind in catalogue.items() if kind.entity not in known)
    if strays:
        raise ValueError(f"entry codes with an entity the catalogue has no section for: {strays}")
    parts = [HEADER]
    for entity, title, intro in ENTITY_SECTIONS:
        kinds = [kind for kind in catalogue.values() if kind.entity == entity]
        if not kinds:
            continue
        parts.append(f"\n## {title}\n\n{intro}\n\n")
        parts.append("| Code | Severity | Cause | Suggestion |\n|---|---|---|---|\n")
        parts.extend(
            f"| `{kind.code}` | {kind.severity} | {_cell(kind.cause)} | {_cell(kind.suggestion)} |\n"
            for kind in kinds
        )
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    return write_or_check(argv, __doc__, {DOC: render}, ROOT, REGENERATE)


if __name__ == "__main__":
    sys.exit(main())
