"""What a sync run needs from the outside, as small interfaces (SPEC A7's "reads by key").

The adapters (``xpm_sync.adapters``) implement them over DynamoDB and XPM; the unit tests of the
sync implement them in memory (``tests/fakes.py``), so the rules of a run are tested in seconds.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import Future
from datetime import datetime
from typing import Any, Protocol

from xpm_sync.domain.active_records import Office, StoredClient, StoredUser, SyncedValues
from xpm_sync.domain.entries import Entry
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.near_match import Suggestion
from xpm_sync.domain.problems import ClosedProblem, RecordState
from xpm_sync.domain.runs import SyncRun, Trigger
from xpm_sync.domain.xpm_records import XpmClientRecord, XpmStaff


class Configs(Protocol):
    """The firms' configs (SPEC B3's Config table)."""

    def get(self, firm_id: str) -> FirmConfig | None: ...

    def update(self, firm_id: str, **values: Any) -> None: ...

    def update_if_same_state(self, firm_id: str, sync_state_id: str | None, **values: Any) -> bool: ...

    def mark_needs_reconnect(
        self, firm_id: str, *, grant_id: str | None, practice_of: FirmConfig | None = None
    ) -> bool: ...


class Runs(Protocol):
    """The runs and their error logs (SPEC B3's sync log)."""

    def save_run(self, run: SyncRun, now: datetime) -> None: ...

    def add_entries(
        self, run: SyncRun, entries: Iterable[Entry], now: datetime, *, start: int = 0
    ) -> int: ...

    def get_run(self, firm_id: str, run_id: str) -> SyncRun | None: ...


class Continuations(Protocol):
    def enqueue_continuation(self, firm_id: str, trigger: Trigger, run_id: str) -> None: ...


class AccessTokens(Protocol):
    def access_token(self, *, force_refresh: bool = False, refused: str | None = None) -> str: ...


class FirmTokenSource(Protocol):
    """A firm's Xero tokens, refreshed as needed (one writer per firm)."""

    def for_firm(self, firm_id: str) -> AccessTokens: ...


class ActiveStore(Protocol):
    """One firm's records in Active. Writes raise ``RecordGone`` (deleted meanwhile) or
    ``ItemTooLarge`` (over DynamoDB's item limit)."""

    def offices(self) -> dict[str, Office]: ...

    def user_exists(self, user_id: str) -> bool: ...

    def users(self) -> list[StoredUser]: ...

    def clients(self) -> list[StoredClient]: ...

    def client(self, client_id: str) -> StoredClient | None: ...

    def clients_by_uuid(self, xpm_uuids: Collection[str]) -> list[StoredClient]: ...

    def clients_by_code(self, codes: Collection[str]) -> list[StoredClient]: ...

    def create(self, entity: str, values: SyncedValues, **owned_at_creation: str) -> str: ...

    def check_fits(self, entity: str, values: SyncedValues, **owned_at_creation: str) -> None:
        """Raises ``RecordTooLarge`` when a record holding ``values`` (and, a new one, what ``create``
        sets with them) could not be stored."""

    def update(self, entity: str, record_id: str, changes: SyncedValues) -> None: ...

    def update_soon(self, entity: str, record_id: str, changes: SyncedValues) -> Future[None]:
        """``update`` on the store's own writers; the future raises what ``update`` would."""
        ...

    def set_codes(self, entity: str, codes: list[tuple[str, str]]) -> bool: ...

    def flush(self) -> None: ...


class XpmSource(Protocol):
    """One practice in XPM. ``calls`` counts the requests sent."""

    calls: int

    def list_staff(self) -> list[XpmStaff]: ...

    def iter_clients(self, *, modified_since: datetime | None = None) -> Iterator[XpmClientRecord]: ...

    def close(self) -> None: ...


class StateStore(Protocol):
    """One firm's record states: open problems and retry copies (SPEC A7, B6)."""

    def load(self, *, with_copies: bool = True) -> dict[str, RecordState]: ...

    def get(self, key: str) -> RecordState | None: ...

    def write(
        self,
        puts: Iterable[RecordState],
        deletes: Iterable[str],
        fixed: Iterable[ClosedProblem],
        now: datetime,
    ) -> None: ...


class MatchStore(Protocol):
    """One firm's suggested links and the unlinked Active clients they are found among (SPEC B6)."""

    def load(self) -> dict[str, Suggestion]: ...

    def suggest(self, suggestion: Suggestion) -> None: ...

    def forget(self, xpm_uuids: Iterable[str]) -> None: ...

    def unlinked(self) -> list[StoredClient]: ...

    def replace_unlinked(
        self, now_unlinked: Iterable[StoredClient], before: Iterable[StoredClient]
    ) -> None: ...

    def drop_unlinked(self, client_ids: Iterable[str]) -> None: ...
