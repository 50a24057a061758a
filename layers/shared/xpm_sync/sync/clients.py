"""XPM clients -> Active clients (SPEC A2-A4, B6), one record at a time as the list streams in.

Matching is by ``xpm_uuid``, then by ``code``: a client entered by hand during a trial is linked,
never duplicated; one whose code matches nothing but whose ABN or name matches an unlinked Active
client waits as a suggested link for the admin's answer (``domain.near_match``). Archived or
deleted XPM clients are never created, a linked one is marked ``xpm_archived``; a live XPM client
re-created with the code of an archived one takes its Active client back (``CLIENT_RELINKED``).
Prospects are skipped. Nothing is ever deleted. Who may take which code, and when a client waits
for another to give its code up, is ``domain.code_ledger``'s bookkeeping.

On a full read the whole firm is loaded once; otherwise only the clients the records at hand
concern are looked up, by UUID and by code (:meth:`ClientSync.prepare`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from xpm_sync.domain import entries as codes
from xpm_sync.domain.active_records import StoredClient
from xpm_sync.domain.code_ledger import ClientCodeLedger, code_key
from xpm_sync.domain.entries import Entry, EntryKind
from xpm_sync.domain.errors import RecordGone, RecordTooLarge
from xpm_sync.domain.mapping import (
    MAX_CLIENT_CODE_BYTES,
    changed_values,
    client_label,
    client_values,
    legal_name,
    map_client,
)
from xpm_sync.domain.near_match import MatchReason, Suggestion, UnlinkedClients
from xpm_sync.domain.partners import PeopleDirectory
from xpm_sync.domain.problems import RecordState
from xpm_sync.domain.xpm_records import XpmClientRecord
from xpm_sync.sync.findings import RunFindings
from xpm_sync.sync.ports import ActiveStore, MatchStore

# Warnings a client synced with that a change of people mends, not a change of the record: its
# Manager not resolved to an Active user.
RESOLVED_BY_PEOPLE = frozenset({codes.MANAGER_NOT_IN_ACTIVE.code, codes.MANAGER_NOT_IN_XPM_STAFF.code})


def waits_on_people(state: RecordState) -> bool:
    """The record's copy is kept only for a Manager left empty (RESOLVED_BY_PEOPLE): it synced, and
    no error or suggested link waits on it."""
    return (
        bool(state.codes & RESOLVED_BY_PEOPLE)
        and codes.NEAR_MATCH.code not in state.codes
        and all(problem.severity != "error" for problem in state.problems)
    )


# DynamoDB's limit on the items of one transaction.
MAX_CODES_SWAPPED_AT_ONCE = 100


@dataclass
class ClientIndex:
    """The firm's Active clients as this run knows them: all of them after a full load, else those
    looked up so far. Kept on what Active holds after each write of the run.

    Active may hold two clients with one code (one entered by hand beside a synced one): each code
    keeps every client known with it, synced ones first, and the first is its holder; when that
    one moves away, the next holds it, never forgotten."""

    by_uuid: dict[str, StoredClient] = field(default_factory=dict)
    by_id: dict[str, StoredClient] = field(default_factory=dict)
    looked_up_uuids: set[str] = field(default_factory=set)
    looked_up_codes: set[str] = field(default_factory=set)
    complete: bool = False
    # code_key -> client_id -> the client, in the order met: the first holds the code.
    _with_code: dict[str, dict[str, StoredClient]] = field(default_factory=dict)

    def remember(self, client: StoredClient) -> None:
        self.by_id[client.client_id] = client
        if client.xpm_uuid:
            self.by_uuid[client.xpm_uuid] = client
        if client.code:
            known = self._with_code.setdefault(code_key(client.code), {})
            known.setdefault(client.client_id, client)
            holder = next(iter(known.values()))
            if client.xpm_uuid and not holder.xpm_uuid:
                # Whatever order Active answered in, a synced client holds its code ahead of one
                # entered by hand with it (which takes it only once the synced one moves away).
                self._with_code[code_key(client.code)] = {client.client_id: client, **known}

    def replace(self, old: StoredClient, new: StoredClient) -> None:
        """``old`` became ``new`` in Active: a code or UUID it moved away from is free again (or
        held by the next client known with it)."""
        if old.xpm_uuid and self.by_uuid.get(old.xpm_uuid) is old and old.xpm_uuid != new.xpm_uuid:
            del self.by_uuid[old.xpm_uuid]
        same_code = bool(old.code and new.code and code_key(old.code) == code_key(new.code))
        if old.code and not same_code:
            self._let_go(old)
        self.by_id[new.client_id] = new
        if new.xpm_uuid:
            self.by_uuid[new.xpm_uuid] = new
        if new.code:
            # Kept in its place when the code stays: the holder stays the holder.
            self._with_code.setdefault(code_key(new.code), {})[new.client_id] = new

    def move_codes(self, moves: Sequence[tuple[StoredClient, str]]) -> None:
        """Clients that took each other's codes at once (a swap): every code they gave up is let go
        before any is taken, so none is free to another client on the way."""
        for member, _ in moves:
            self._let_go(member)
        for member, code in moves:
            moved = member.with_changes({"code": code})
            self.replace(member.with_changes({"code": None}), moved)
            # Active gave it the code: it holds it, ahead of any client entered by hand with it.
            known = self._with_code[code_key(code)]
            self._with_code[code_key(code)] = {moved.client_id: moved, **known}

    def forget(self, client: StoredClient) -> None:
        self.by_id.pop(client.client_id, None)
        if client.xpm_uuid and self.by_uuid.get(client.xpm_uuid) is client:
            del self.by_uuid[client.xpm_uuid]
        self._let_go(client)

    def holder_of(self, code: str) -> StoredClient | None:
        known = self._with_code.get(code_key(code))
        return next(iter(known.values()), None) if known else None

    def _let_go(self, client: StoredClient) -> None:
        if not client.code:
            return
        key = code_key(client.code)
        known = self._with_code.get(key)
        if known is not None and known.pop(client.client_id, None) is not None and not known:
            del self._with_code[key]


@dataclass(frozen=True)
class _Write:
    """A client's update on its way to Active, and what its record becomes once it has answered."""

    record: XpmClientRecord
    label: str
    found: list[Entry]
    client: StoredClient  # as Active holds it once written
    outcome: str
    answer: Future[None]


@dataclass
class ClientSync:
    store: ActiveStore
    people: PeopleDirectory
    default_office_code: str
    counts: dict[str, int]
    findings: RunFindings
    matches: MatchStore
    suggestions: dict[str, Suggestion] = field(default_factory=dict)
    # Active clients with no link to XPM, where suggested links are found (SPEC B6).
    unlinked: UnlinkedClients = field(default_factory=UnlinkedClients)
    # Of those, the ones this run linked or found linked (or gone): the stored list drops them.
    no_longer_unlinked: set[str] = field(default_factory=set)
    # ... and the ones read again this run and found still unlinked, as listed.
    _checked_unlinked: set[str] = field(default_factory=set)
    dry_run: bool = False
    index: ClientIndex = field(default_factory=ClientIndex)
    ledger: ClientCodeLedger[XpmClientRecord] = field(default_factory=ClientCodeLedger)
    # Records this run applied from XPM's answer: a UUID met twice in it is a repeat (SPEC A4).
    applied_from_list: set[str] = field(default_factory=set)
    # Suggestions whose record synced this run: the answer has served.
    settled_suggestions: set[str] = field(default_factory=set)
    # Clients an earlier part of this run sent live and that failed (their record states say so).
    failed_earlier_in_run: set[str] = field(default_factory=set)
    # The part stops before the list's end: a holder not yet read may still be live in XPM.
    _stopping: bool = False
    # This part read XPM's whole client list (a full read in one part): a linked holder it did not
    # send is no longer in XPM.
    _whole_list_read: bool = False
    # The codes and labels of the records XPM's answer sent without a usable UUID: a client with
    # that code (or a suggestion for that label) may be one of them, so it is not taken as gone.
    _unidentified_codes: set[str] = field(default_factory=set)
    _unidentified_labels: set[str] = field(default_factory=set)
    # Updates sent and not yet answered, by client id (at most one per client).
    _in_flight: dict[str, _Write] = field(default_factory=dict)

    # --- reading Active --------------------------------------------------------------------------

    def load_all(self) -> list[StoredClient]:
        """Read the whole firm (first sync, daily full read); returns the unlinked clients found."""
        for client in self.store.clients():
            self.index.remember(client)
            if not client.xpm_uuid:
                self.unlinked[client.client_id] = client
        self.index.complete = True
        return list(self.unlinked.values())

    def prepare(self, records: Sequence[XpmClientRecord]) -> None:
        """Look up, by key, the Active clients these records may concern (incremental runs): by
        UUID, then by code only where the UUID did not find the client already holding it. A record
        that cannot be synced whatever Active holds (its mapping or partner fails) is not looked up:
        a firm with thousands of records failing on a missing partner costs no read for them."""
        if self.index.complete:
            return
        concerned = [record for record in records if record.uuid and self._may_write(record)]
        uuids = {record.uuid for record in concerned} - self.index.looked_up_uuids
        if uuids:
            self._remember_found(self.store.clients_by_uuid(uuids))
            self.index.looked_up_uuids |= uuids
        codes_wanted = {
            code
            for record in concerned
            if (code := (record.client_code or "").strip())
            and code_key(code) not in self.index.looked_up_codes
            and not self._holds_own_code(record, code)
        }
        if codes_wanted:
            self._remember_found(self.store.clients_by_code(codes_wanted))
        self.index.looked_up_codes |= {code_key(code) for code in codes_wanted}

    def _may_write(self, record: XpmClientRecord) -> bool:
        if record.is_prospect:
            return False
        if record.is_archived or record.is_deleted:
            return True
        mapping = map_client(record)
        return mapping.fields is not None and self.people.resolves_partner(mapping)

    def _holds_own_code(self, record: XpmClientRecord, code: str) -> bool:
        """The client linked to the record already holds its code: nobody else can (one code, one
        client), so there is no holder to look for."""
        linked = self.index.by_uuid.get(record.uuid)
        return linked is not None and code_key(linked.code or "") == code_key(code)

    def _remember_found(self, found: Iterable[StoredClient]) -> None:
        for client in found:
            # What this run wrote is newer than what an index (eventually consistent) returns.
            if client.client_id not in self.index.by_id:
                self.index.remember(client)

    # --- applying records ------------------------------------------------------------------------

    def apply(self, record: XpmClientRecord, *, from_retry: bool = False) -> None:
        """Apply one record of XPM's answer (or, ``from_retry``, the copy kept of one that failed)."""
        label = client_label(record)
        if not record.uuid:
            self._unidentified_codes.add(code_key(record.client_code or ""))
            self._unidentified_labels.add(label)
            self._reject(record, label, codes.CLIENT_UUID_MISSING, f"{label} came from XPM without a UUID.")
            return
        if not from_retry:
            if record.uuid in self.applied_from_list:
                self._reject(
                    record,
                    label,
                    codes.XPM_UUID_REPEATED,
                    f"XPM sent {label} more than once in one answer; the first copy was synced and "
                    "this one dropped.",
                )
                return
            self.applied_from_list.add(record.uuid)
        self.ledger.seen(record.uuid, record.client_code, live=not (record.is_archived or record.is_deleted))
        self.ledger.unwait(record.uuid)  # a record XPM sends again replaces the one waiting
        if record.oversized:
            self._too_large(record, label)
            return
        self._apply(record, may_wait=True)
        self._wake(record.uuid)

    def _apply(self, record: XpmClientRecord, *, may_wait: bool, code_written: bool = False) -> None:
        label = client_label(record)
        if record.is_prospect:
            # Not a client yet (SPEC A2): nothing created, a linked client left as it is.
            self.counts["skipped"] += 1
            self._synced(record, label, [])
            return
        if record.is_archived or record.is_deleted:
            self._archive(record, label, may_wait=may_wait, code_written=code_written)
            return
        mapping = map_client(record)
        found = list(mapping.entries)
        duplicate_of = (
            self.ledger.claim(record.uuid, record.client_code, label) if record.client_code else None
        )
        if duplicate_of is not None:
            found.append(
                codes.CLIENT_CODE_DUPLICATE.entry(
                    label=label,
                    xpm_uuid=record.uuid,
                    message=f"The client code {record.client_code} is used by both {duplicate_of} and "
                    f"{label} in XPM; only {duplicate_of} is synced.",
                )
            )
        # Partner problems are reported even when other fields failed, so the admin sees every
        # fix a record needs in one run.
        people = self.people.resolve(mapping, label=label, xpm_uuid=record.uuid)
        found.extend(people.entries)
        if mapping.fields is None or duplicate_of is not None or people.partner_user_id is None:
            self._fail(record, label, *found)
            return
        fields = mapping.fields
        existing = self.index.by_uuid.get(record.uuid)
        holder = self.index.holder_of(fields.code)
        if (
            holder is not None
            and existing is not None
            and (
                holder.client_id == existing.client_id
                or code_key(existing.code or "") == code_key(fields.code)
            )
        ):
            # The linked client has the code already (case aside): a client entered by hand beside it
            # with the same code takes nothing from it, whichever of the two the index met first.
            holder = None
        if may_wait and holder is not None and holder.xpm_uuid and self.ledger.must_wait_for(holder.xpm_uuid):
            # The holder is yet to be applied in this run and may give the code up (an archived
            # one too: archived under another code, it was no re-creation). This client keeps its
            # claim against later clients of the list (SPEC A4), but not against the holder: one
            # that keeps the code keeps syncing (ClientCodeLedger.claim).
            self.ledger.wait(record.uuid, record, holder.xpm_uuid)
            return
        linked = False
        if holder is not None:
            conflict = self._code_conflict(record, label, fields.code, existing, holder)
            if conflict is not None:
                self.ledger.release(record.uuid, fields.code)
                self._fail(record, label, *found, conflict)
                return
            if holder.xpm_uuid:  # archived in XPM: the re-created client takes it back (SPEC A4)
                found.append(self._relinked(record, label, holder))
            existing, linked = holder, True
        if existing is None:
            suggested = self._suggested_link(record, label)
            if suggested is not None:
                if isinstance(suggested, Entry):
                    self.counts["skipped"] += 1
                    self.findings.report(
                        "client",
                        xpm_uuid=record.uuid,
                        label=label,
                        entries=(*found, suggested),
                        retry_copy=record.model_dump_json(),
                        web_url=record.web_url,
                    )
                    return
                existing, linked = suggested, True
        desired = client_values(
            fields,
            xpm_uuid=record.uuid,
            partner_user_id=people.partner_user_id,
            manager_user_id=people.manager_user_id,
        )
        self._write(record, label, found, existing, desired, linked=linked, code_written=code_written)

    def _write(
        self,
        record: XpmClientRecord,
        label: str,
        found: list[Entry],
        existing: StoredClient | None,
        desired: dict[str, object],
        *,
        linked: bool,
        code_written: bool,
    ) -> None:
        if existing is None:
            try:
                if self.dry_run:
                    self.store.check_fits("client", desired, office_code=self.default_office_code)
                    client_id = f"planned-{record.uuid}"
                else:
                    client_id = self.store.create("client", desired, office_code=self.default_office_code)
            except RecordTooLarge:
                self._too_large(record, label, *found)
                return
            self.index.remember(StoredClient(client_id, {k: v for k, v in desired.items() if v is not None}))
            self._written(record, label, found, "created")
            return
        changes = changed_values(existing.synced, desired)
        outcome = (
            "linked" if linked and self.dry_run else "updated" if changes or code_written else "unchanged"
        )
        written = existing.with_changes(changes)
        if changes and self.dry_run:
            # The synced values only: Active's own attributes are not read, so a client that only
            # they push over the limit is planned as updated (the run would say RECORD_TOO_LARGE).
            try:
                self.store.check_fits("client", written.synced)
            except RecordTooLarge:
                self._too_large(record, label, *found)
                return
        self.index.replace(existing, written)
        self._now_linked(existing.client_id)
        if not changes or self.dry_run:
            self._written(record, label, found, outcome)
            return
        self._wait_for_writes_to(existing.client_id)
        write = _Write(
            record,
            label,
            found,
            written,
            outcome,
            self.store.update_soon("client", existing.client_id, changes),
        )
        if "code" in changes or "xpm_uuid" in changes:
            # What links a client, or holds a code, is written before the next record is applied:
            # Active never holds two clients with one code, not even between two writes.
            self._resolve(write)
        else:
            # Other fields go out while the next records are applied; the outcome is counted (or the
            # record failed) when the write has answered (drain).
            self._in_flight[existing.client_id] = write

    def _wait_for_writes_to(self, client_id: str) -> None:
        """One write at a time to one client: its earlier write lands first."""
        earlier = self._in_flight.pop(client_id, None)
        if earlier is not None:
            self._resolve(earlier)

    def drain(self) -> None:
        """Wait for every write in flight and settle each record's outcome (SPEC A5's counts)."""
        while self._in_flight:
            _, write = self._in_flight.popitem()
            self._resolve(write)

    def _resolve(self, write: _Write) -> None:
        try:
            write.answer.result()
        except RecordGone:
            self._deleted_meanwhile(write.record, write.label, write.client, *write.found)
            return
        except RecordTooLarge:
            self._too_large(write.record, write.label, *write.found)
            return
        self._written(write.record, write.label, write.found, write.outcome)

    def _written(self, record: XpmClientRecord, label: str, found: list[Entry], outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        self._synced(record, label, found)

    def _too_large(self, record: XpmClientRecord, label: str, *found: Entry) -> None:
        self._reject(
            record,
            label,
            codes.RECORD_TOO_LARGE,
            f"{label} is too large for Active to store: it was not written. The sync tries it again "
            "when XPM sends it changed.",
            *found,
        )

    def _synced(self, record: XpmClientRecord, label: str, found: Iterable[Entry]) -> None:
        if record.uuid in self.suggestions:
            self.settled_suggestions.add(record.uuid)
        entries = tuple(found)
        # A Manager left empty is mended outside the record (a user added in Active, a staff member
        # fixed in XPM): the copy is kept, to apply again once the people change (SPEC A7).
        mended_elsewhere = record.uuid and any(entry.code in RESOLVED_BY_PEOPLE for entry in entries)
        self.findings.report(
            "client",
            xpm_uuid=record.uuid,
            label=label,
            entries=entries,
            retry_copy=record.model_dump_json() if mended_elsewhere else None,
            web_url=record.web_url,
        )

    def _deleted_meanwhile(
        self, record: XpmClientRecord, label: str, client: StoredClient | None, *found: Entry
    ) -> None:
        """Active deleted the client while the run went on: not brought back; retried next run."""
        if client is not None:
            self.index.forget(client)
        self._fail(
            record,
            label,
            *found,
            codes.CLIENT_DELETED_DURING_RUN.entry(
                label=label,
                xpm_uuid=record.uuid,
                message=f"{label} was deleted in Active while the sync was running; not updated.",
            ),
        )

    def _reject(
        self, record: XpmClientRecord, label: str, kind: EntryKind, message: str, *found: Entry
    ) -> None:
        """The record fails for what XPM sent (no UUID, sent twice, too large for Active), so no copy
        is kept for a retry: it would fail the same way (a repeat's first copy has synced). ``kind``
        and ``message`` say why."""
        entry = kind.entry(label=label, xpm_uuid=record.uuid, message=message)
        self._fail(record, label, *found, entry, retry=False)

    def _fail(self, record: XpmClientRecord, label: str, *found: Entry, retry: bool = True) -> None:
        """The record cannot be synced now. Unless ``retry`` is off, the copy XPM sent is kept and
        applied again every run until it syncs (SPEC A7)."""
        self.counts["failed"] += 1
        self.findings.report(
            "client",
            xpm_uuid=record.uuid or None,
            label=label,
            entries=found,
            retry_copy=record.model_dump_json() if retry and record.uuid else None,
            web_url=record.web_url,
        )

    # --- codes (SPEC A4) ---------------------------------------------------------------------------

    def _code_conflict(
        self,
        record: XpmClientRecord,
        label: str,
        code: str,
        existing: StoredClient | None,
        holder: StoredClient,
    ) -> Entry | None:
        """Linking or renaming must never leave two Active clients with one code."""
        if self.ledger.was_swap_refused(record.uuid):
            return codes.CLIENT_CODE_TAKEN.entry(
                label=label,
                xpm_uuid=record.uuid,
                message=f"{label} changed its code to {code} in XPM, in a swap of codes with "
                f"{holder.legal_name}, which still has it in Active: Active did not take the swapped "
                "codes at once this run. The sync tries again next run.",
            )
        # The holder XPM sent live in this run (its Active client may still say archived).
        revived = holder.xpm_uuid is not None and (
            self.ledger.seen_live(holder.xpm_uuid) or holder.xpm_uuid in self.failed_earlier_in_run
        )
        if revived and self.ledger.seen_with_another_code(holder.xpm_uuid or "", code):
            # XPM moved the live holder off this code in this run, but its Active client could not
            # follow (it failed): no duplicate in XPM, the code is simply not free yet in Active.
            return codes.CLIENT_CODE_TAKEN.entry(
                label=label,
                xpm_uuid=record.uuid,
                message=f"{label} has the code {code} in XPM, which the Active client {holder.label} "
                "still has: that client has another code in XPM now, but could not sync this run (see "
                "its own problem). Once it syncs, the code is free and this client syncs too.",
            )
        unread = holder.xpm_uuid is not None and self._stopping and not self.ledger.was_seen(holder.xpm_uuid)
        if existing is None and holder.xpm_uuid and holder.archived_in_xpm and not revived and unread:
            # The part stops before XPM's answer says whether the holder is still archived: it may be
            # live again, and then its client is nobody's to take.
            return codes.CLIENT_CODE_TAKEN.entry(
                label=label,
                xpm_uuid=record.uuid,
                message=f"{label} has the code {code} in XPM, which the Active client {holder.label}, "
                "archived in XPM, still has: this part of the run ended before it could tell whether "
                "that client is still archived. The sync tries again next run.",
            )
        # Deleted in XPM and gone from its list: as good as archived for SPEC A4's re-creation.
        unlisted = (
            holder.xpm_uuid is not None
            and self._whole_list_read
            and not self.ledger.was_seen(holder.xpm_uuid)
            and not self._unidentified_codes & {"", code_key(holder.code or "")}
        )
        if existing is None and (not holder.xpm_uuid or (holder.archived_in_xpm and not revived) or unlisted):
            # Entered by hand in Active: linked (SPEC A2); archived in XPM, or no longer listed
            # there: relinked (SPEC A4). One XPM sent live in this run (brought back from the
            # archive) is nobody's to take.
            return None
        if unlisted:
            return codes.CLIENT_CODE_TAKEN.entry(
                label=label,
                xpm_uuid=record.uuid,
                message=f"{label} changed its code to {code} in XPM, but the Active client {holder.label}, "
                "which XPM no longer lists, already has that code.",
            )
        if holder.xpm_uuid and (revived or not holder.archived_in_xpm):
            # Another XPM client already holds the code: the duplicate-code rule of SPEC A4, seen
            # across runs (the first holder synced in an earlier run).
            return codes.CLIENT_CODE_DUPLICATE.entry(
                label=label,
                xpm_uuid=record.uuid,
                message=f"The client code {code} is used by both {holder.label} and {label} in XPM; "
                f"only {holder.label} is synced.",
            )
        archived = ", archived in XPM," if holder.archived_in_xpm else ""
        return codes.CLIENT_CODE_TAKEN.entry(
            label=label,
            xpm_uuid=record.uuid,
            message=f"{label} changed its code to {code} in XPM, but the Active client {holder.label}"
            f"{archived} already has that code.",
        )

    @staticmethod
    def _relinked(record: XpmClientRecord, label: str, holder: StoredClient) -> Entry:
        return codes.CLIENT_RELINKED.entry(
            label=label,
            xpm_uuid=record.uuid,
            message=f"{label} was re-created in XPM with the code of {holder.label}, archived or deleted "
            f"there (XPM client {holder.xpm_uuid}): the new XPM client now syncs to that Active client.",
        )

    def _wake(self, uuid: str) -> None:
        """``uuid`` has been applied: what waited for its code is applied again, in the order it
        came; each of those may free a code in turn (a chain of renumbered codes)."""
        applied = deque([uuid])
        while applied:
            for waiter_uuid, waiter in self.ledger.waiters_of(applied.popleft()):
                self._apply(waiter, may_wait=True)
                if not self.ledger.is_waiting(waiter_uuid):
                    applied.append(waiter_uuid)

    def settle(self, *, stopping: bool = False, whole_list: bool = False) -> None:
        """The list is done (or the part must stop: ``stopping``). Clients that wait for each
        other's codes in a ring (codes swapped in XPM) take them all at once; a client still waiting
        for a code whose holder XPM did not send, or did not move, fails on the conflict as it
        stands (when stopping, it takes no archived holder's client: that holder may yet come live),
        unless this part read XPM's ``whole_list``: a holder it did not send is gone from XPM, and
        its client is the re-created client's to take back (SPEC A4)."""
        self._stopping = stopping
        self._whole_list_read = whole_list and not stopping
        for ring in self.ledger.rings():
            self._swap(ring)
        while waiters := self.ledger.take_any_waiters():
            for waiter_uuid, waiter in waiters:
                self._apply(waiter, may_wait=False)
                self._wake(waiter_uuid)
        self.drain()

    def suggestions_not_listed(self) -> list[str]:
        """The XPM UUIDs of suggested links whose record XPM's whole list, read by this part, does
        not have (none when this part did not read the whole list): no run can apply an answer."""
        if not self._whole_list_read:
            return []
        return [
            uuid
            for uuid, suggestion in self.suggestions.items()
            if not self.ledger.was_seen(uuid) and suggestion.label not in self._unidentified_labels
        ]

    def _swap(self, ring: list[tuple[str, XpmClientRecord]]) -> None:
        """Give every client of the ring its new code in one transaction, so that Active never
        holds two clients with one code, not even between two writes; then apply each as usual.
        If the transaction cannot be made, they stay waiting and fail on their conflicts."""
        moves: list[tuple[StoredClient, str]] = []
        for uuid, record in ring:
            member = self.index.by_uuid.get(uuid)
            if member is None:
                return  # only linked clients hold and wait for codes
            if record.is_archived or record.is_deleted:
                # An archived client claims nothing in XPM's list: it takes its code if free.
                moves.append((member, (record.client_code or "").strip()))
                continue
            fields = map_client(record).fields
            # An earlier client of the list with the same code wins it (SPEC A4): no swap then.
            if fields is None or not self.ledger.holds_first_claim(uuid, fields.code):
                return
            moves.append((member, fields.code))
        if len(moves) > MAX_CODES_SWAPPED_AT_ONCE or not (
            self.dry_run
            or self.store.set_codes("client", [(member.client_id, code) for member, code in moves])
        ):
            self.ledger.swap_refused([uuid for uuid, _ in ring])
            return
        self.index.move_codes(moves)
        for uuid, _ in ring:
            self.ledger.unwait(uuid)
        for uuid, record in ring:
            self._apply(record, may_wait=True, code_written=True)
            self._wake(uuid)

    # --- archived, deleted and suggested (SPEC A3, B6) ---------------------------------------------

    def _archive(
        self, record: XpmClientRecord, label: str, *, may_wait: bool, code_written: bool = False
    ) -> None:
        """Archived or deleted in XPM: never created, a linked client marked, nothing deleted.

        A linked client's code follows XPM's (SPEC A4) when no other client holds the new one:
        a practice often changes a code to free it before archiving, and a stale code would make
        the next client given it look like the archived one re-created (CLIENT_RELINKED). Like a
        live client, it waits for a holder yet to be applied in this run, which may move away."""
        linked = self.index.by_uuid.get(record.uuid)
        changes: dict[str, object] = {"xpm_archived": True}
        if linked is not None:
            code, holder_uuid = self._archived_code(record, linked)
            if holder_uuid is not None and may_wait:
                self.ledger.wait(record.uuid, record, holder_uuid)
                return
            if code is not None:
                changes["code"] = code
        if linked is None and record.client_code:
            # A client entered by hand with this code is the same client (SPEC A2): link it too.
            holder = self.index.holder_of(record.client_code)
            if holder is not None and not holder.xpm_uuid:
                linked, changes = holder, {"xpm_uuid": record.uuid, "xpm_archived": True}
        if linked is None:
            self.counts["skipped"] += 1
        elif not changed_values(linked.synced, changes):
            self.counts["updated" if code_written else "unchanged"] += 1
        else:
            self._wait_for_writes_to(linked.client_id)
            try:
                if not self.dry_run:
                    self.store.update("client", linked.client_id, changes)
            except RecordGone:
                self._deleted_meanwhile(record, label, linked)
                return
            self.index.replace(linked, linked.with_changes(changes))
            self._now_linked(linked.client_id)
            # A preview counts the clients it would link to XPM apart (SPEC B6).
            self.counts["linked" if self.dry_run and "xpm_uuid" in changes else "updated"] += 1
        self._synced(record, label, [])

    def _archived_code(self, record: XpmClientRecord, linked: StoredClient) -> tuple[str | None, str | None]:
        """The code an archived record's linked client takes now: XPM's, unless unchanged,
        unusable as a code, or held by another Active client (the archived one then keeps its
        own). When that holder is yet to be applied in this run, its UUID: it may give it up."""
        code = (record.client_code or "").strip()
        if not code or code == linked.code or len(code.encode("utf-8")) > MAX_CLIENT_CODE_BYTES:
            return None, None
        holder = self.index.holder_of(code)
        if holder is None or holder.client_id == linked.client_id:
            return code, None
        if holder.xpm_uuid and self.ledger.must_wait_for(holder.xpm_uuid):
            return None, holder.xpm_uuid
        return None, None

    def _now_linked(self, client_id: str) -> None:
        if self.unlinked.pop(client_id, None) is not None:
            self.no_longer_unlinked.add(client_id)

    def _look_alike(
        self, *, abn: str | None, name: str | None, already: Suggestion | None
    ) -> tuple[StoredClient, MatchReason] | None:
        """The unlinked Active client this record may be (``UnlinkedClients.find``). On an incremental run
        the unlinked clients are the last full read's: a candidate is read again before it is first
        suggested (once a run), and passed over when it has been linked, deleted or renamed since.
        One the record already waits on (``already``) is not read again: links the sync makes take
        clients off the list as they happen, and the daily full read rebuilds it."""
        while True:
            found = self.unlinked.find(abn=abn, name=name)
            if found is None or self.index.complete:
                return found
            listed, _ = found
            if listed.client_id in self._checked_unlinked or (
                already is not None and already.client_id == listed.client_id
            ):
                return found
            current = self.store.client(listed.client_id)
            del self.unlinked[listed.client_id]
            if current is None or current.xpm_uuid:
                self.no_longer_unlinked.add(listed.client_id)
                continue
            if (current.legal_name, current.abn) == (listed.legal_name, listed.abn):
                self.unlinked[listed.client_id] = listed
                self._checked_unlinked.add(listed.client_id)
                return found
            # Changed since the full read: judged again as it is now.
            self.unlinked[listed.client_id] = current

    def _suggested_link(self, record: XpmClientRecord, label: str) -> StoredClient | Entry | None:
        """For a client about to be created: the Active client the admin said it is (link), None
        to create it (an answer of create, or no look-alike), or the NEAR_MATCH entry it waits with."""
        suggestion = self.suggestions.get(record.uuid)
        if suggestion is not None and suggestion.answer == "create":
            return None
        if suggestion is not None and suggestion.answer == "link":
            target = self.store.client(suggestion.client_id)
            # Linked earlier in this run (two answers naming one client): a preview writes nothing,
            # so only the run's own plan shows it, and the preview must plan what the run will do.
            planned = self.index.by_id.get(suggestion.client_id)
            if target is not None and not target.xpm_uuid and not (planned is not None and planned.xpm_uuid):
                return target
        fields = map_client(record).fields
        candidate = self._look_alike(
            abn=fields.abn if fields else None, name=legal_name(record), already=suggestion
        )
        if candidate is None:
            return None
        client, reason = candidate
        suggested = Suggestion(
            xpm_uuid=record.uuid,
            label=label,
            client_id=client.client_id,
            client_label=client.label,
            reason=reason,
        )
        known = self.suggestions.get(record.uuid)
        if known is None or (known.client_id, known.reason) != (client.client_id, reason):
            # A new suggestion awaits a new answer: one given for another client does not carry over.
            # A preview keeps it too: the admin answers it before the first sync (issue 22).
            self.matches.suggest(suggested)
            self.suggestions[record.uuid] = suggested
        same = "ABN" if reason == "abn" else "name"
        return codes.NEAR_MATCH.entry(
            label=label,
            xpm_uuid=record.uuid,
            message=f"{label} matches no Active client by code, but the Active client {client.label} has "
            f"the same {same} and no link to XPM: it waits for an admin to link it or create it.",
        )
