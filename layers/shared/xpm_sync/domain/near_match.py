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


class UnlinkedClients:
    """Active clients with no link to XPM, where suggested links are found, by client id, with
    indexes by ABN and by name: a run looks a look-alike up for every record waiting on one (every
    hour, from its retry copy), so a lookup must not read every unlinked client (50,000 records
    against 50,000 unlinked clients would be 2.5 billion comparisons an hour)."""

    def __init__(self, clients: Iterable[StoredClient] = ()) -> None:
        self._by_id: dict[str, StoredClient] = {}
        self._by_abn: dict[str, set[str]] = {}
        self._by_name: dict[str, set[str]] = {}
        for client in clients:
            self[client.client_id] = client

    def __setitem__(self, client_id: str, client: StoredClient) -> None:
        self.pop(client_id)
        self._by_id[client_id] = client
        for index, key in self._keys(client):
            index.setdefault(key, set()).add(client_id)

    def __delitem__(self, client_id: str) -> None:
        if self.pop(client_id) is None:
            raise KeyError(client_id)

    def pop(self, client_id: str, default: None = None) -> StoredClient | None:
        client = self._by_id.pop(client_id, None)
        if client is not None:
            for index, key in self._keys(client):
                ids = index[key]
                ids.discard(client_id)
                if not ids:
                    del index[key]
        return client

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def values(self) -> Iterable[StoredClient]:
        return self._by_id.values()

    def find(self, *, abn: str | None, name: str | None) -> tuple[StoredClient, MatchReason] | None:
        """The unlinked Active client with the same ABN (first) or the same name, if any; of
        several, the lowest client id, so every run suggests the same one."""
        if abn and (same_abn := self._by_abn.get(abn)):
            return self._by_id[min(same_abn)], "abn"
        wanted_name = name_key(name)
        if wanted_name and (same_name := self._by_name.get(wanted_name)):
            return self._by_id[min(same_name)], "name"
        return None

    def _keys(self, client: StoredClient) -> list[tuple[dict[str, set[str]], str]]:
        keys: list[tuple[dict[str, set[str]], str]] = []
        if client.abn and (digits := abn_digits(client.abn)):
            keys.append((self._by_abn, digits))
        if named := name_key(client.legal_name):
            keys.append((self._by_name, named))
        return keys
