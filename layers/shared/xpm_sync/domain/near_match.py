"""Suggested links (SPEC B6): an XPM client that matches no Active client by code, while an Active
client with no link to XPM has the same ABN or the same name, is the same client as often as not (a
trial client entered by hand without its XPM code). It is not created: it waits for the admin.

Names are compared with case, punctuation and spacing aside, and the usual spellings of a
company's suffix alike ("Pty Ltd", "Pty. Limited", "Proprietary Limited").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from xpm_sync.domain.active_records import StoredClient
from xpm_sync.domain.entries import MAX_LABEL_CHARS, shorten
from xpm_sync.domain.mapping import abn_digits

MatchReason = Literal["abn", "name"]
MatchAnswer = Literal["link", "create"]

_NOT_A_WORD = re.compile(r"[^\w]+")
_SAME_WORD = {"limited": "ltd", "proprietary": "pty", "company": "co", "and": "&"}


def name_key(name: str | None) -> str:
    """A name as compared for a suggestion: "Smith & Sons Pty. Limited" -> "smith&sonsptyltd".

    The words are made alike ("Pty.Limited", "Smith-and-Jones"), then joined with no gap, so
    punctuation and spacing count for nothing ("A.B.", "O'Brien", "AcmeHoldings").
    """
    if not name:
        return ""
    words = _NOT_A_WORD.sub(" ", name.casefold().replace("&", " and ")).split()
    return "".join(_SAME_WORD.get(word, word) for word in words)


@dataclass(frozen=True)
class Suggestion:
    """An XPM client and the unlinked Active client it may be."""

    xpm_uuid: str
    label: str
    client_id: str
    client_label: str
    reason: MatchReason
    answer: MatchAnswer | None = None
    # The client the run suggested, kept while the admin's answer links another: answering
    # "create" afterwards shows the suggestion as the run made it, not the other client.
    suggested_client_id: str | None = None
    suggested_client_label: str | None = None

    def __post_init__(self) -> None:
        # Cut as every label is: both names come as XPM and Active hold them, and land in one item.
        object.__setattr__(self, "label", shorten(self.label, MAX_LABEL_CHARS))
        object.__setattr__(self, "client_label", shorten(self.client_label, MAX_LABEL_CHARS))


def find_candidate(
    *, abn: str | None, name: str | None, unlinked: Iterable[StoredClient]
) -> tuple[StoredClient, MatchReason] | None:
    """The unlinked Active client with the same ABN (first) or the same name, if any."""
    wanted_name = name_key(name)
    by_name: StoredClient | None = None
    for candidate in sorted(unlinked, key=lambda client: client.client_id):
        if abn and candidate.abn and abn_digits(candidate.abn) == abn:
            return candidate, "abn"
        if by_name is None and wanted_name and name_key(candidate.legal_name) == wanted_name:
            by_name = candidate
    return (by_name, "name") if by_name is not None else None
