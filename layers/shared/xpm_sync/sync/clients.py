"""XPM clients -> Active clients (SPEC A2-A4), one record at a time as the list streams in.

Matching: by ``xpm_uuid``, then by ``code`` (so a client created by hand during a trial is linked,
never duplicated). Archived or deleted XPM clients are never created; a linked one is marked
``xpm_archived``. Nothing is ever deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xpm_sync import entries as codes
from xpm_sync.active.models import Address
from xpm_sync.active.repository import ActiveRepository, RecordGone, changed_values
from xpm_sync.entries import Entry, raise_entry
from xpm_sync.mapping import client_label, map_client, resolve_people
from xpm_sync.xpm.models import XpmClient


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

    def _fail(self, client: XpmClient, *new_entries: Entry) -> None:
        self.entries.extend(new_entries)
        self.counts["failed"] += 1
        self.failed_uuids.add(client.uuid)

    def apply(self, client: XpmClient) -> None:
        self.load()
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
        conflict = self._code_conflict(client, label, fields.code, existing, holder)
        if conflict is not None:
            # This client cannot take the code, so it must not keep later clients of this list
            # from it either: the holder, when XPM lists it, syncs, and this one stays the error.
            key = _code_key(fields.code)
            if self._first_with_code.get(key, ("", ""))[0] == client.uuid:
                del self._first_with_code[key]
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
            else:
                self.counts["unchanged"] += 1
        self.synced_uuids.add(client.uuid)

    def _update(
        self, client: XpmClient, label: str, existing: dict[str, Any], changes: dict[str, object]
    ) -> bool:
        """Write the changes; False (and the record failed) when Active deleted it meanwhile."""
        try:
            self.repo.update("client", str(existing["client_id"]), changes)
        except RecordGone:
            self._by_uuid.pop(client.uuid, None)
            if existing.get("code"):
                self._by_code.pop(_code_key(str(existing["code"])), None)
            self._fail(
                client,
                raise_entry(
                    codes.CLIENT_DELETED_DURING_RUN,
                    label=label,
                    xpm_uuid=client.uuid,
                    message=f"{label} was deleted in Active while the sync was running; not updated.",
                ),
            )
            return False
        return True

    @staticmethod
    def _code_conflict(
        client: XpmClient,
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
            return raise_entry(
                codes.CLIENT_CODE_DUPLICATE,
                label=label,
                xpm_uuid=client.uuid,
                message=f"The client code {code} is used by both {holder_label} and {label} in XPM; "
                f"only {holder_label} is synced.",
            )
        if existing is None:
            return None  # a client entered by hand in Active: link it
        return raise_entry(
            codes.CLIENT_CODE_TAKEN,
            label=label,
            xpm_uuid=client.uuid,
            message=f"{label} changed its code to {code} in XPM, but the Active client {holder_label} "
            "already has that code.",
        )

    def _duplicate_code_entry(self, client: XpmClient, label: str) -> Entry | None:
        if not client.client_code:
            return None
        first_uuid, first_label = self._first_with_code.setdefault(
            _code_key(client.client_code), (client.uuid, label)
        )
        if first_uuid == client.uuid:
            return None
        return raise_entry(
            codes.CLIENT_CODE_DUPLICATE,
            label=label,
            xpm_uuid=client.uuid,
            message=f"The client code {client.client_code} is used by both {first_label} and {label} "
            f"in XPM; only {first_label} is synced.",
        )

    def _archive(self, client: XpmClient) -> None:
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
