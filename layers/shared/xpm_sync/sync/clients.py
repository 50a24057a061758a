"""XPM clients -> Active clients (SPEC A2-A4), one record at a time as the list streams in.

Matching: by ``xpm_uuid``, then by ``code`` (so a client created by hand during a trial is linked,
never duplicated). Archived or deleted XPM clients are never created; a linked one is marked
``xpm_archived``. Nothing is ever deleted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from xpm_sync.adapters.active_table import ActiveRepository, RecordGone, changed_values
from xpm_sync.domain import entries as codes
from xpm_sync.domain.active_records import Address
from xpm_sync.domain.entries import Entry
from xpm_sync.domain.mapping import client_label, map_client, resolve_people
from xpm_sync.domain.xpm_records import XpmClientRecord

# DynamoDB's limit on the items of one transaction.
MAX_CODES_SWAPPED_AT_ONCE = 100


def _code_key(code: str) -> str:
    return code.strip().casefold()


def _address_value(address: Address | None) -> dict[str, str] | None:
    if address is None:
        return None
    parts = {k: v for k, v in address.model_dump().items() if v is not None}
    return parts or None


@dataclass
class People:
    """What partner resolution needs from the users step."""

    staff_email_by_uuid: dict[str, str]
    user_id_by_email: dict[str, str]
    default_partner_user_id: str | None


@dataclass
class ClientSync:
    repo: ActiveRepository
    people: People
    default_office_code: str
    counts: dict[str, int]
    entries: list[Entry] = field(default_factory=list)
    synced_uuids: set[str] = field(default_factory=set)
    failed_uuids: set[str] = field(default_factory=set)
    _by_uuid: dict[str, dict[str, Any]] = field(default_factory=dict)
    _by_code: dict[str, dict[str, Any]] = field(default_factory=dict)
    _first_with_code: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Clients whose new code another XPM client still holds in Active, by that holder's UUID: when
    # a firm renumbers its codes in XPM, the holder may give the code up further down the list.
    _waiting: dict[str, list[XpmClientRecord]] = field(default_factory=dict)
    _holder_of_waiting: dict[str, str] = field(default_factory=dict)
    _swaps_refused: set[str] = field(default_factory=set)
    _seen: set[str] = field(default_factory=set)

    _loaded: bool = False

    def load(self) -> None:
        """Read the firm's Active clients (once). A full read does it before XPM's list is opened,
        so a large list's connection never waits on it; an incremental run only when XPM sent
        something, so a quiet hour costs no read."""
        if not self._loaded:
            self._loaded = True
            for item in self.repo.clients():
                self._remember(item)

    def _remember(self, item: dict[str, Any]) -> None:
        if item.get("xpm_uuid"):
            self._by_uuid[str(item["xpm_uuid"])] = item
        if item.get("code"):
            self._by_code.setdefault(_code_key(str(item["code"])), item)

    def _changed(self, item: dict[str, Any], changes: dict[str, object]) -> None:
        """Keep the indexes on what Active now holds: a code XPM moved away from is free again."""
        old_code = item.get("code")
        item.update(changes)
        if old_code:
            old_key = _code_key(str(old_code))
            if self._by_code.get(old_key) is item and old_key != _code_key(str(item.get("code") or "")):
                del self._by_code[old_key]
        self._remember(item)

    def _fail(self, client: XpmClientRecord, *new_entries: Entry) -> None:
        self.entries.extend(new_entries)
        self.counts["failed"] += 1
        self.failed_uuids.add(client.uuid)

    def apply(self, client: XpmClientRecord) -> None:
        self.load()
        self._seen.add(client.uuid)
        self._unwait(client.uuid)  # a record XPM sends again replaces the one waiting
        self._apply(client, may_wait=True)
        self._wake(client.uuid)

    @property
    def waiting_uuids(self) -> set[str]:
        """Clients applied but waiting for a code: they are settled before the run ends."""
        return set(self._holder_of_waiting)

    def _unwait(self, uuid: str) -> None:
        holder = self._holder_of_waiting.pop(uuid, None)
        if holder is not None:
            waiters = [waiter for waiter in self._waiting[holder] if waiter.uuid != uuid]
            if waiters:
                self._waiting[holder] = waiters
            else:
                del self._waiting[holder]

    def settle(self) -> None:
        """The list is done (or the run must stop). Clients that wait for each other's codes in a
        ring (codes swapped in XPM) take them all at once; a client still waiting for a code whose
        holder XPM did not send, or did not move, fails on the conflict as it stands."""
        for ring in self._rings():
            self._swap(ring)
        while self._waiting:
            _, waiters = self._waiting.popitem()
            for waiter in waiters:
                del self._holder_of_waiting[waiter.uuid]
                self._apply(waiter, may_wait=False)
                self._wake(waiter.uuid)

    def _rings(self) -> list[list[XpmClientRecord]]:
        """Waiting clients each of which waits for the next one's code, the last for the first's."""
        waiting = {waiter.uuid: waiter for waiters in self._waiting.values() for waiter in waiters}
        rings: list[list[XpmClientRecord]] = []
        done: set[str] = set()
        for start in waiting:
            path: list[str] = []
            uuid: str | None = start
            while uuid is not None and uuid not in done and uuid not in path:
                path.append(uuid)
                uuid = self._holder_of_waiting.get(uuid)
            if uuid is not None and uuid in path:
                rings.append([waiting[member] for member in path[path.index(uuid) :]])
            done.update(path)
        return rings

    def _swap(self, ring: list[XpmClientRecord]) -> None:
        """Give every client of the ring its new code in one transaction, so that Active never
        holds two clients with one code, not even between two writes; then apply each as usual.
        If the transaction cannot be made, they stay waiting and fail on their conflicts."""
        items = [self._by_uuid[client.uuid] for client in ring]
        new_codes: list[str] = []
        for client in ring:
            fields = map_client(client).fields
            assert fields is not None, "only a client whose record maps waits for a code"
            new_codes.append(fields.code)
        # An earlier client of the list with the same code wins it (SPEC A4): no swap then.
        first_claims = all(
            self._first_with_code.get(_code_key(code), ("", ""))[0] == client.uuid
            for client, code in zip(ring, new_codes, strict=True)
        )
        if not first_claims:
            return
        if len(ring) > MAX_CODES_SWAPPED_AT_ONCE or not self.repo.set_codes(
            "client", [(str(item["client_id"]), code) for item, code in zip(items, new_codes, strict=True)]
        ):
            self._swaps_refused.update(client.uuid for client in ring)
            return
        for item, code in zip(items, new_codes, strict=True):
            # Each new code was another member's old one, so every index entry moves.
            item["code"] = code
            self._by_code[_code_key(code)] = item
        for client in ring:
            self._unwait(client.uuid)
        for client in ring:
            self._apply(client, may_wait=True, code_written=True)
            self._wake(client.uuid)

    def _wake(self, uuid: str) -> None:
        """``uuid`` has been applied: what waited for its code is applied again, in the order it
        came; each of those may free a code in turn (a chain of renumbered codes)."""
        applied = deque([uuid])
        while applied:
            for waiter in self._waiting.pop(applied.popleft(), []):
                del self._holder_of_waiting[waiter.uuid]
                self._apply(waiter, may_wait=True)
                if waiter.uuid not in self._holder_of_waiting:
                    applied.append(waiter.uuid)

    def _apply(self, client: XpmClientRecord, *, may_wait: bool, code_written: bool = False) -> None:
        self.failed_uuids.discard(client.uuid)
        if client.is_archived or client.is_deleted:
            self._archive(client)
            return
        label = client_label(client)
        mapping = map_client(client)
        found = list(mapping.entries)
        duplicate = self._duplicate_code_entry(client, label)
        if duplicate is not None:
            found.append(duplicate)
        # Partner problems are reported even when other fields failed, so the admin sees every
        # fix a record needs in one run.
        people = resolve_people(
            mapping,
            label=label,
            xpm_uuid=client.uuid,
            staff_email_by_uuid=self.people.staff_email_by_uuid,
            user_id_by_email=self.people.user_id_by_email,
            default_partner_user_id=self.people.default_partner_user_id,
        )
        found.extend(people.entries)
        if mapping.fields is None or duplicate is not None or people.partner_user_id is None:
            self._fail(client, *found)
            return

        fields = mapping.fields
        desired: dict[str, object] = {
            **fields.model_dump(exclude={"residential_address", "postal_address"}),
            "residential_address": _address_value(fields.residential_address),
            "postal_address": _address_value(fields.postal_address),
            "partner_user_id": people.partner_user_id,
            "manager_user_id": people.manager_user_id,
            "xpm_uuid": client.uuid,
            "xpm_archived": False,
        }
        existing = self._by_uuid.get(client.uuid)
        holder = self._by_code.get(_code_key(fields.code))
        holder_uuid = str(holder.get("xpm_uuid") or "") if holder is not None else ""
        if (
            may_wait
            and holder is not existing
            and holder_uuid
            and (holder_uuid not in self._seen or holder_uuid in self._holder_of_waiting)
        ):
            # The holder is yet to be applied in this run and may give the code up. This client
            # keeps its claim to the code against later clients of the list (SPEC A4), but not
            # against the holder: one that keeps the code keeps syncing (_duplicate_code_entry).
            self._waiting.setdefault(holder_uuid, []).append(client)
            self._holder_of_waiting[client.uuid] = holder_uuid
            return
        if client.uuid in self._swaps_refused and holder is not None and holder is not existing:
            conflict: Entry | None = self._swap_refused_entry(client, label, fields.code, holder)
        else:
            conflict = self._code_conflict(client, label, fields.code, existing, holder)
        if conflict is not None:
            # This client cannot take the code, so it must not keep later clients of this list
            # from it either: the holder, when XPM lists it, syncs, and this one stays the error.
            self._release_claim(client)
            self._fail(client, *found, conflict)
            return
        self.entries.extend(found)
        existing = existing or holder
        if existing is None:
            client_id = self.repo.create("client", desired, office_code=self.default_office_code)
            self._remember({**desired, "client_id": client_id})
            self.counts["created"] += 1
        else:
            changes = changed_values(existing, desired)
            if changes:
                if not self._update(client, label, existing, changes):
                    return
                self._changed(existing, changes)
                self.counts["updated"] += 1
            elif code_written:
                self.counts["updated"] += 1
            else:
                self.counts["unchanged"] += 1
        self.synced_uuids.add(client.uuid)

    def _update(
        self, client: XpmClientRecord, label: str, existing: dict[str, Any], changes: dict[str, object]
    ) -> bool:
        """Write the changes; False (and the record failed) when Active deleted it meanwhile."""
        try:
            self.repo.update("client", str(existing["client_id"]), changes)
        except RecordGone:
            self._by_uuid.pop(client.uuid, None)
            if existing.get("code"):
                key = _code_key(str(existing["code"]))
                if self._by_code.get(key) is existing:
                    del self._by_code[key]
            self._fail(
                client,
                codes.CLIENT_DELETED_DURING_RUN.entry(
                    label=label,
                    xpm_uuid=client.uuid,
                    message=f"{label} was deleted in Active while the sync was running; not updated.",
                ),
            )
            return False
        return True

    @staticmethod
    def _code_conflict(
        client: XpmClientRecord,
        label: str,
        code: str,
        existing: dict[str, Any] | None,
        holder: dict[str, Any] | None,
    ) -> Entry | None:
        """Linking or renaming must never leave two Active clients with one code."""
        if holder is None or holder is existing:
            return None
        holder_label = f"{holder.get('legal_name')} ({holder.get('code')})"
        if holder.get("xpm_uuid"):
            # Another XPM client already holds the code: the duplicate-code rule of SPEC A4, seen
            # across runs (the first holder synced in an earlier run).
            return codes.CLIENT_CODE_DUPLICATE.entry(
                label=label,
                xpm_uuid=client.uuid,
                message=f"The client code {code} is used by both {holder_label} and {label} in XPM; "
                f"only {holder_label} is synced.",
            )
        if existing is None:
            return None  # a client entered by hand in Active: link it
        return codes.CLIENT_CODE_TAKEN.entry(
            label=label,
            xpm_uuid=client.uuid,
            message=f"{label} changed its code to {code} in XPM, but the Active client {holder_label} "
            "already has that code.",
        )

    @staticmethod
    def _swap_refused_entry(client: XpmClientRecord, label: str, code: str, holder: dict[str, Any]) -> Entry:
        return codes.CLIENT_CODE_TAKEN.entry(
            label=label,
            xpm_uuid=client.uuid,
            message=f"{label} changed its code to {code} in XPM, in a swap of codes with "
            f"{holder.get('legal_name')}, which still has it in Active: Active did not take the swapped "
            "codes at once this run. The sync tries again next run.",
        )

    def _release_claim(self, client: XpmClientRecord) -> None:
        key = _code_key(client.client_code or "")
        if self._first_with_code.get(key, ("", ""))[0] == client.uuid:
            del self._first_with_code[key]

    def _duplicate_code_entry(self, client: XpmClientRecord, label: str) -> Entry | None:
        if not client.client_code:
            return None
        key = _code_key(client.client_code)
        first_uuid, first_label = self._first_with_code.setdefault(key, (client.uuid, label))
        if first_uuid != client.uuid and self._holder_of_waiting.get(first_uuid) == client.uuid:
            # The first claimant waits for this client to give the code up, and it does not.
            self._first_with_code[key] = first_uuid, first_label = client.uuid, label
        if first_uuid == client.uuid:
            return None
        return codes.CLIENT_CODE_DUPLICATE.entry(
            label=label,
            xpm_uuid=client.uuid,
            message=f"The client code {client.client_code} is used by both {first_label} and {label} "
            f"in XPM; only {first_label} is synced.",
        )

    def _archive(self, client: XpmClientRecord) -> None:
        """Archived or deleted in XPM: never created, a linked client marked, nothing deleted."""
        linked = self._by_uuid.get(client.uuid)
        changes: dict[str, object] = {"xpm_archived": True}
        if linked is None and client.client_code:
            # A client entered by hand with this code is the same client (SPEC A2): link it too.
            holder = self._by_code.get(_code_key(client.client_code))
            if holder is not None and not holder.get("xpm_uuid"):
                linked, changes = holder, {"xpm_uuid": client.uuid, "xpm_archived": True}
        if linked is None:
            self.counts["skipped"] += 1
        elif linked.get("xpm_archived") is True:
            self.counts["unchanged"] += 1
        elif self._update(client, client_label(client), linked, changes):
            self._changed(linked, changes)
            self.counts["updated"] += 1
        if client.uuid not in self.failed_uuids:
            self.synced_uuids.add(client.uuid)
