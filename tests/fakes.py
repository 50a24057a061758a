"""In-memory stand-ins for what a sync run talks to (``xpm_sync.sync.ports``), for fast unit tests.

They keep the same promises as the adapters where a rule depends on them: the Active store refuses
an item over DynamoDB's limit, raises ``RecordGone`` for a record deleted meanwhile, applies code
swaps all at once or not at all, and counts the items it hands out (reads by key, as SPEC A7 wants).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from xpm_sync.adapters.active_table import QueuedUpdate, code_spellings, write_each
from xpm_sync.adapters.dynamodb import MAX_ITEM_BYTES, item_size
from xpm_sync.adapters.notifier import NotifyResult
from xpm_sync.adapters.tokens import NeedsReconnect
from xpm_sync.domain.active_records import Office, StoredClient, StoredUser, SyncedValues
from xpm_sync.domain.clock import iso
from xpm_sync.domain.code_ledger import code_key
from xpm_sync.domain.entries import NOTIFICATION_USER_INVALID, Entry
from xpm_sync.domain.errors import RecordGone, RecordTooLarge
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.near_match import Suggestion
from xpm_sync.domain.problems import ClosedProblem, RecordState
from xpm_sync.domain.runs import SyncRun, Trigger
from xpm_sync.domain.xpm_records import XpmClientRecord, XpmStaff
from xpm_sync.sync.engine import SyncServices

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


@dataclass
class FakeActive:
    """One firm's Active records: items as dicts, by id."""

    offices_by_code: dict[str, Office] = field(default_factory=dict)
    user_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    client_items: dict[str, dict[str, Any]] = field(default_factory=dict)
    items_read: int = 0
    # The index lookups made, in order: "uuid" or "code" (an incremental run reads by key).
    lookups: list[str] = field(default_factory=list)
    writes: Counter[str] = field(default_factory=Counter)
    refuse_swaps: bool = False
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _queued: list[tuple[str, str, SyncedValues, Future[None]]] = field(default_factory=list)

    # --- seeding, as Admin Centre would ------------------------------------------------------------

    def add_office(self, code: str, default_partner_user_id: str | None = None) -> None:
        self.offices_by_code[code] = Office(code=code, default_partner_user_id=default_partner_user_id)

    def add_user(self, email: str, **attributes: Any) -> str:
        user_id = f"user-{next(self._ids)}"
        self.user_items[user_id] = {"user_id": user_id, "email": email, **attributes}
        return user_id

    def add_client(self, **attributes: Any) -> str:
        client_id = f"client-{next(self._ids)}"
        self.client_items[client_id] = {"client_id": client_id, **attributes}
        return client_id

    def clients_with(self, **wanted: Any) -> list[dict[str, Any]]:
        return [
            item for item in self.client_items.values() if all(item.get(k) == v for k, v in wanted.items())
        ]

    # --- ActiveStore -------------------------------------------------------------------------------

    def offices(self) -> dict[str, Office]:
        self.items_read += len(self.offices_by_code)
        return dict(self.offices_by_code)

    def user_exists(self, user_id: str) -> bool:
        return user_id in self.user_items

    def users(self) -> list[StoredUser]:
        self.items_read += len(self.user_items)
        return [StoredUser.from_item(item) for item in self.user_items.values()]

    def clients(self) -> list[StoredClient]:
        self.items_read += len(self.client_items)
        return [StoredClient.from_item(item) for item in self.client_items.values()]

    def client(self, client_id: str) -> StoredClient | None:
        item = self.client_items.get(client_id)
        self.items_read += item is not None
        return StoredClient.from_item(item) if item else None

    def clients_by_uuid(self, xpm_uuids: Collection[str]) -> list[StoredClient]:
        self.lookups.append("uuid")
        found = [item for item in self.client_items.values() if item.get("xpm_uuid") in set(xpm_uuids)]
        self.items_read += len(found)
        return [StoredClient.from_item(item) for item in found]

    def clients_by_code(self, codes: Collection[str]) -> list[StoredClient]:
        self.lookups.append("code")
        spellings = {spelling for code in codes for spelling in code_spellings(code)}
        found = [item for item in self.client_items.values() if item.get("code") in spellings]
        self.items_read += len(found)
        return [StoredClient.from_item(item) for item in found]

    def check_fits(self, entity: str, values: SyncedValues, **owned_at_creation: str) -> None:
        item = {k: v for k, v in values.items() if v is not None} | dict(owned_at_creation)
        if item_size(item) > MAX_ITEM_BYTES:
            raise RecordTooLarge(entity)

    def create(self, entity: str, values: SyncedValues, **owned_at_creation: str) -> str:
        item = {k: v for k, v in values.items() if v is not None} | dict(owned_at_creation)
        self.check_fits(entity, item)
        record_id = f"{entity}-{next(self._ids)}"
        item[f"{entity}_id"] = record_id
        (self.user_items if entity == "user" else self.client_items)[record_id] = item
        self.writes["create"] += 1
        return record_id

    def update(self, entity: str, record_id: str, changes: SyncedValues) -> None:
        items = self.user_items if entity == "user" else self.client_items
        if record_id not in items:
            raise RecordGone(record_id)
        if item_size(changes) > MAX_ITEM_BYTES:
            raise RecordTooLarge(record_id)
        for name, value in changes.items():
            if value is None:
                items[record_id].pop(name, None)
            else:
                items[record_id][name] = value
        self.writes["update"] += 1

    def update_soon(self, entity: str, record_id: str, changes: SyncedValues) -> Future[None]:
        # As the real store: queued, written when anyone asks for an outcome or at ``flush``
        # (a transaction's worth at a time); one client never has two updates waiting.
        assert all(queued[:2] != (entity, record_id) for queued in self._queued), "two writes to one record"
        answer = QueuedUpdate(self._write_queued)
        self._queued.append((entity, record_id, changes, answer))
        return answer

    def _write_queued(self) -> None:
        queued, self._queued = self._queued, []
        write_each(queued, self.update)

    def set_codes(self, entity: str, codes: list[tuple[str, str]]) -> bool:
        if self.refuse_swaps or any(record_id not in self.client_items for record_id, _ in codes):
            return False
        for record_id, code in codes:
            self.client_items[record_id]["code"] = code
        self.writes["transaction"] += 1
        return True

    def flush(self) -> None:
        self._write_queued()

    # --- invariants a test checks after a run ------------------------------------------------------

    def assert_no_two_clients_share_a_code_or_uuid(self) -> None:
        codes = [code_key(str(item["code"])) for item in self.client_items.values() if item.get("code")]
        uuids = [item["xpm_uuid"] for item in self.client_items.values() if item.get("xpm_uuid")]
        assert len(codes) == len(set(codes)), f"two clients share a code: {sorted(codes)}"
        assert len(uuids) == len(set(uuids)), f"two clients share an xpm_uuid: {sorted(uuids)}"


@dataclass
class FakeStates:
    states: dict[str, RecordState] = field(default_factory=dict)
    fixed: list[ClosedProblem] = field(default_factory=list)
    writes: int = 0

    def load(self, *, with_copies: bool = True) -> dict[str, RecordState]:
        return dict(self.states)

    def get(self, key: str) -> RecordState | None:
        return self.states.get(key)

    def write(
        self,
        puts: Iterable[RecordState],
        deletes: Iterable[str],
        fixed: Iterable[ClosedProblem],
        now: datetime,
    ) -> None:
        for state in puts:
            self.states[state.key] = state
            self.writes += 1
        for key in deletes:
            self.states.pop(key, None)
            self.writes += 1
        self.fixed.extend(fixed)

    def open_codes(self) -> dict[str, set[str]]:
        return {key: state.codes for key, state in self.states.items()}


@dataclass
class FakeMatches:
    suggestions: dict[str, Suggestion] = field(default_factory=dict)
    unlinked_clients: list[StoredClient] = field(default_factory=list)

    def load(self) -> dict[str, Suggestion]:
        return dict(self.suggestions)

    def suggest(self, suggestion: Suggestion) -> None:
        self.suggestions[suggestion.xpm_uuid] = suggestion

    def forget(self, xpm_uuids: Iterable[str]) -> None:
        for xpm_uuid in xpm_uuids:
            self.suggestions.pop(xpm_uuid, None)

    def unlinked(self) -> list[StoredClient]:
        return list(self.unlinked_clients)

    def replace_unlinked(self, now_unlinked: Iterable[StoredClient], before: Iterable[StoredClient]) -> None:
        self.unlinked_clients = list(now_unlinked)

    def drop_unlinked(self, client_ids: Iterable[str]) -> None:
        dropped = set(client_ids)
        self.unlinked_clients = [c for c in self.unlinked_clients if c.client_id not in dropped]

    def answer(self, xpm_uuid: str, answer: str) -> None:
        known = self.suggestions[xpm_uuid]
        self.suggestions[xpm_uuid] = Suggestion(
            xpm_uuid=known.xpm_uuid,
            label=known.label,
            client_id=known.client_id,
            client_label=known.client_label,
            reason=known.reason,
            answer="link" if answer == "link" else "create",
        )


@dataclass
class FakeXpm:
    """A practice in XPM: the staff list and the client list, in XPM's order."""

    staff: list[XpmStaff] = field(default_factory=list)
    clients: list[XpmClientRecord] = field(default_factory=list)
    modified: dict[str, datetime] = field(default_factory=dict)
    calls: int = 0
    client_lists_asked: list[datetime | None] = field(default_factory=list)
    # Stops the client list after this many records with this error (a slow or broken answer).
    break_after: tuple[int, BaseException] | None = None

    def list_staff(self) -> list[XpmStaff]:
        self.calls += 1
        return list(self.staff)

    def iter_clients(self, *, modified_since: datetime | None = None) -> Iterator[XpmClientRecord]:
        self.calls += 1
        self.client_lists_asked.append(modified_since)
        for index, client in enumerate(self.clients):
            if self.break_after is not None and index == self.break_after[0]:
                raise self.break_after[1]
            changed = self.modified.get(client.uuid, START - timedelta(days=30))
            if modified_since is None or changed >= modified_since:
                yield client

    def close(self) -> None:
        return None

    def connect(self) -> FakeXpm:
        """A new client for a new run: its call count starts again."""
        self.calls = 0
        return self

    def put(self, client: XpmClientRecord, *, at: datetime) -> None:
        """Add or replace a client, modified at ``at``."""
        self.clients = [c for c in self.clients if c.uuid != client.uuid or not client.uuid] + [client]
        self.modified[client.uuid] = at


@dataclass
class FakeConfigs:
    configs: dict[str, FirmConfig] = field(default_factory=dict)

    def get(self, firm_id: str) -> FirmConfig | None:
        config = self.configs.get(firm_id)
        return config.model_copy(deep=True) if config else None

    def update(self, firm_id: str, **values: Any) -> None:
        current = self.configs[firm_id].model_dump()
        current.update(values)
        self.configs[firm_id] = FirmConfig.model_validate(current)

    def update_if_same_state(self, firm_id: str, sync_state_id: str | None, **values: Any) -> bool:
        if self.configs[firm_id].sync_state_id != sync_state_id:
            return False
        self.update(firm_id, **values)
        return True

    def mark_needs_reconnect(
        self, firm_id: str, *, grant_id: str | None, practice_of: FirmConfig | None = None
    ) -> bool:
        config = self.configs[firm_id]
        if config.connection != "connected" or config.grant_id != grant_id:
            return False
        if practice_of is not None and config.sync_state_id != practice_of.sync_state_id:
            return False
        self.update(firm_id, status="needs_reconnect")
        return True


@dataclass
class FakeRuns:
    runs: dict[str, SyncRun] = field(default_factory=dict)
    entries: dict[str, list[Entry]] = field(default_factory=dict)

    def save_run(self, run: SyncRun, now: datetime) -> None:
        self.runs[run.run_id] = run.model_copy(deep=True)

    def add_entries(self, run: SyncRun, entries: Iterable[Entry], now: datetime, *, start: int = 0) -> int:
        kept = self.entries.setdefault(run.run_id, [])
        del kept[start:]
        kept.extend(entries)
        return len(kept)

    def get_run(self, firm_id: str, run_id: str) -> SyncRun | None:
        run = self.runs.get(run_id)
        return run.model_copy(deep=True) if run else None

    def latest(self) -> SyncRun:
        return max(self.runs.values(), key=lambda run: run.run_id)

    def latest_entries(self) -> list[Entry]:
        return self.entries.get(self.latest().run_id, [])


@dataclass
class FakeTokens:
    """A firm's tokens: a refresh is recorded in the config, as the token store records it."""

    configs: FakeConfigs
    clock: FakeClock
    refreshes: int = 0
    refused: bool = False  # Xero refuses the refresh token (revoked, or 60 days unused)

    def for_firm(self, firm_id: str) -> FakeTokens:
        return self

    def access_token(self, *, force_refresh: bool = False, refused: str | None = None) -> str:
        if force_refresh or refused is not None:
            if self.refused:
                raise NeedsReconnect("invalid_grant")
            self.refreshes += 1
            self.configs.update(FIRM, tokens_refreshed_at=iso(self.clock.now()))
        return "access-token"


@dataclass
class FakeQueue:
    continuations: list[tuple[str, Trigger, str]] = field(default_factory=list)
    refusals: int = 0  # the next sends SQS refuses

    def enqueue_continuation(self, firm_id: str, trigger: Trigger, run_id: str) -> None:
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("SQS SendMessage failed")
        self.continuations.append((firm_id, trigger, run_id))


@dataclass
class FakeNotifier:
    """Sends every email it is asked for; with ``no_recipient``, finds nobody to send it to, as the
    real one does for a notification user that is gone (and says so in an entry)."""

    sent: list[SyncRun] = field(default_factory=list)
    asked: list[SyncRun] = field(default_factory=list)
    no_recipient: bool = False
    # Fails before it could look anybody up, as the real one does when Active cannot be read.
    broken: bool = False
    looked_up: int = 0  # times a run with nothing to tell checked the notification user
    # The firm's email of the day already went: what is asked is held back (SPEC A5).
    suppressed: bool = False

    def __call__(self, run: SyncRun, entries: list[Entry], config: FirmConfig) -> NotifyResult:
        self.asked.append(run)
        if self.broken:
            return NotifyResult("error")
        if self.suppressed:
            return NotifyResult("suppressed")
        if self.no_recipient:
            entry = NOTIFICATION_USER_INVALID.entry(
                label="Notification user", message="The notification user no longer exists in Active."
            )
            return NotifyResult("no_recipient", [entry])
        self.sent.append(run)
        return NotifyResult("sent")

    def reaches_recipient(self, config: FirmConfig) -> bool:
        self.looked_up += 1
        return not (self.no_recipient or self.broken)


FIRM = "firm-1"
OFFICE = "MEL"


@dataclass
class Firm:
    """One firm, connected and configured, with everything a run talks to in memory."""

    active: FakeActive = field(default_factory=FakeActive)
    xpm: FakeXpm = field(default_factory=FakeXpm)
    states: FakeStates = field(default_factory=FakeStates)
    matches: FakeMatches = field(default_factory=FakeMatches)
    configs: FakeConfigs = field(default_factory=FakeConfigs)
    runs: FakeRuns = field(default_factory=FakeRuns)
    queue: FakeQueue = field(default_factory=FakeQueue)
    notifier: FakeNotifier = field(default_factory=FakeNotifier)
    clock: FakeClock = field(default_factory=FakeClock)
    seconds_left: float = float("inf")
    tokens: FakeTokens = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = FakeTokens(self.configs, self.clock)
        self.active.add_office(OFFICE)
        self.configs.configs[FIRM] = FirmConfig(
            firm_id=FIRM,
            status="connected",
            sync_enabled=True,
            tenant_id="tenant-1",
            tenant_name="Harbour & Co",
            default_office_code=OFFICE,
            notification_user_id=None,
            connected_at="2026-03-01T00:00:00Z",
        )

    def services(self) -> SyncServices:
        return SyncServices(
            config=self.configs,
            runs=self.runs,
            active_for=lambda firm_id: self.active,
            states_for=lambda firm_id: self.states,
            matches_for=lambda firm_id: self.matches,
            tokens=self.tokens,
            xpm_factory=lambda tenant_id, tokens: self.xpm.connect(),
            clock=self.clock,
            queue=self.queue,
            remaining_seconds=lambda: self.seconds_left,
            notifier=self.notifier,
        )

    @property
    def config(self) -> FirmConfig:
        return self.configs.configs[FIRM]
