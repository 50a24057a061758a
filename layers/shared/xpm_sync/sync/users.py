"""XPM staff -> Active users (SPEC A3, A4): match by ``xpm_uuid``, then by email.

The staff list is read whole every run, so the firm's users are too (a few hundred at most). The
first staff member with an email keeps it; a later one with the same email is an error, as is a
staff record XPM sent twice or without a UUID. Only the synced attributes are written.

Staff already linked to a user are synced before the others: when one changes their email and a
new staff member is given the old one, the linked user takes its new email first, so the old one
names nobody and the newcomer gets a user of their own, whatever order XPM lists them in.
"""

from __future__ import annotations

from collections.abc import Iterable

from xpm_sync.domain import entries as codes
from xpm_sync.domain.active_records import StoredUser, UserFields
from xpm_sync.domain.entries import Entry, EntryKind
from xpm_sync.domain.errors import RecordGone, RecordTooLarge
from xpm_sync.domain.mapping import (
    changed_values,
    map_staff,
    normalise_email,
    staff_label,
    user_values,
    uuid_key,
)
from xpm_sync.domain.partners import PeopleDirectory
from xpm_sync.domain.xpm_records import XpmStaff
from xpm_sync.sync.findings import RunFindings
from xpm_sync.sync.ports import ActiveStore


class UserSync:
    def __init__(
        self, store: ActiveStore, counts: dict[str, int], findings: RunFindings, *, dry_run: bool = False
    ) -> None:
        self._store = store
        self._counts = counts
        self._findings = findings
        self._dry_run = dry_run
        self._listed: set[str] = set()
        # Linked users whose staff member has another email in this answer, and will take it.
        self._releasing: set[str] = set()
        stored = store.users()
        self._by_uuid = {user.xpm_uuid: user for user in stored if user.xpm_uuid}
        # Two Active users with one email (a sign-up twice, say): the one linked to XPM is the
        # staff member's, whatever order Active lists them in; the other still has the email.
        self._all_by_email: dict[str, list[StoredUser]] = {}
        for user in sorted(stored, key=lambda user: not user.xpm_uuid):
            if user.email:
                self._all_by_email.setdefault(normalise_email(user.email), []).append(user)
        self.directory = PeopleDirectory(
            user_id_by_email={email: users[0].user_id for email, users in self._all_by_email.items()}
        )

    def sync(self, staff_list: Iterable[XpmStaff]) -> PeopleDirectory:
        """Sync every staff member; the directory the clients' partners resolve through."""
        staff_list = list(staff_list)
        # The whole staff list, every run: a user linked to a UUID not in it follows its email.
        self._listed = {uuid_key(staff.uuid) for staff in staff_list if staff.uuid}
        for uuid, user in self._by_uuid.items():
            if uuid_key(uuid) in self._listed:
                self.directory.link(uuid, user.user_id)
        with_email: dict[str, list[XpmStaff]] = {}
        seen: set[str] = set()
        mapped: list[tuple[XpmStaff, str, UserFields, tuple[Entry, ...], str]] = []
        for staff in staff_list:
            label = staff_label(staff)
            if not staff.uuid:
                self._fail(staff, label, codes.STAFF_UUID_MISSING, f"{label} came from XPM without a UUID.")
                continue
            if staff.uuid in seen:
                self._fail(
                    staff,
                    label,
                    codes.XPM_UUID_REPEATED,
                    f"XPM sent the staff member {label} twice in one answer; the first copy was synced.",
                )
                continue
            seen.add(staff.uuid)
            if staff.oversized:
                self._fail(staff, label, codes.RECORD_TOO_LARGE, f"{label} is too large for Active to store.")
                continue
            if staff.email:
                self.directory.staff_email_by_uuid[uuid_key(staff.uuid)] = staff.email
            mapping = map_staff(staff)
            if mapping.fields is None:
                self._counts["failed"] += 1
                self._findings.report("user", xpm_uuid=staff.uuid, label=label, entries=mapping.entries)
                continue
            email_key = normalise_email(mapping.fields.email)
            with_email.setdefault(email_key, []).append(staff)
            mapped.append((staff, label, mapping.fields, mapping.entries, email_key))
        first_with_email = {
            email_key: self._keeper(email_key, staff) for email_key, staff in with_email.items()
        }
        self._releasing = self._users_releasing(
            [(staff, email_key) for staff, _, _, _, email_key in mapped], first_with_email
        )
        linked_first = sorted(mapped, key=lambda one: one[0].uuid not in self._by_uuid)
        for staff, label, fields, found, email_key in linked_first:
            self._sync_one(staff, label, fields, found, email_key, first_with_email[email_key])
        return self.directory

    def _keeper(self, email_key: str, staff: list[XpmStaff]) -> XpmStaff:
        """Of the staff XPM sends with one email, the one who keeps it: the one whose Active user
        already has it, else the first in XPM's order (a reorder in XPM moves no email)."""
        for member in staff:
            user = self._by_uuid.get(member.uuid)
            if user is not None and user.email and normalise_email(user.email) == email_key:
                return member
        return staff[0]

    def _users_releasing(
        self, wanted: list[tuple[XpmStaff, str]], first_with_email: dict[str, XpmStaff]
    ) -> set[str]:
        """The linked users that give their email up in this run: their staff member has another
        email in XPM and will take it. One refused (a duplicate in XPM, or a new email another user
        keeps) keeps its old email, which may keep the next one from taking it: worked out before
        any write, until nothing changes, so emails swapped between staff move and a chain with a
        refused link moves nothing onto an email still held."""
        refused = {staff.uuid for staff, email_key in wanted if first_with_email[email_key] is not staff}
        while True:
            releasing = {
                user.user_id
                for staff, email_key in wanted
                if staff.uuid not in refused
                and (user := self._by_uuid.get(staff.uuid)) is not None
                and user.email
                and normalise_email(user.email) != email_key
            }
            now_refused = {
                staff.uuid
                for staff, email_key in wanted
                if staff.uuid not in refused and self._holder_keeps(staff, email_key, releasing) is not None
            }
            if not now_refused:
                return releasing
            refused |= now_refused

    def _holder_keeps(self, staff: XpmStaff, email_key: str, releasing: set[str]) -> StoredUser | None:
        """Another Active user who has this email and keeps it, if any: the staff member's user may
        not take it (Active users sign in by email). Every user with it counts, a duplicate
        sign-up too, unless it gives the email up in this run."""
        existing = self._by_uuid.get(staff.uuid) or self._user_with(email_key)
        if existing is None or (existing.email and normalise_email(existing.email) == email_key):
            return None  # a new user, or one that has it already: nothing moves onto a held email
        for holder in self._all_by_email.get(email_key, []):
            if holder.user_id != existing.user_id and holder.user_id not in releasing:
                return holder
        return None

    def _user_with(self, email_key: str) -> StoredUser | None:
        """The Active user a staff member with this email matches: of several, the linked one."""
        users = self._all_by_email.get(email_key)
        return users[0] if users else None

    def _fail(self, staff: XpmStaff, label: str, kind: EntryKind, message: str, *found: Entry) -> None:
        self._counts["failed"] += 1
        entry = kind.entry(label=label, message=message, xpm_uuid=staff.uuid, entity="user")
        self._findings.report("user", xpm_uuid=staff.uuid, label=label, entries=(*found, entry))

    def _sync_one(
        self,
        staff: XpmStaff,
        label: str,
        fields: UserFields,
        found: tuple[Entry, ...],
        email_key: str,
        earlier: XpmStaff,
    ) -> None:
        if earlier is not staff:
            self._fail(
                staff,
                label,
                codes.STAFF_EMAIL_DUPLICATE,
                f"{label} has the email {fields.email}, which {staff_label(earlier)} also has in XPM; "
                "only the first is synced.",
                *found,
            )
            return
        existing = self._by_uuid.get(staff.uuid) or self._user_with(email_key)
        if existing is not None and (holder := self._holder_keeps(staff, email_key, self._releasing)):
            # Active users sign in by email: two with one would be one person to Active, and a
            # client's Partner would resolve to whichever a run read first.
            self._fail(
                staff,
                label,
                codes.STAFF_EMAIL_TAKEN,
                f"{label} now has the email {fields.email} in XPM, which the Active user "
                f"{holder.email} already has; the linked user keeps {existing.email}.",
                *found,
            )
            # A staff member linked to that user is still that user to Active: a client whose
            # Partner (or Manager) they are resolves to it (PeopleDirectory.link).
            return
        relinked: tuple[Entry, ...] = ()
        if existing is not None and existing.xpm_uuid and existing.xpm_uuid != staff.uuid:
            if uuid_key(existing.xpm_uuid) in self._listed:
                self._fail(
                    staff,
                    label,
                    codes.USER_LINKED_TO_OTHER_STAFF,
                    f"The Active user {existing.email} is already linked to another XPM staff member, "
                    f"so {label} was not synced.",
                    *found,
                )
                return
            relinked = (
                codes.USER_RELINKED.entry(
                    label=label,
                    message=f"The Active user {existing.email} followed a staff member XPM no longer "
                    f"lists; it now follows {label}.",
                    xpm_uuid=staff.uuid,
                    entity="user",
                ),
            )
        desired = user_values(fields, xpm_uuid=staff.uuid)
        try:
            outcome, user_id = self._write(existing, desired)
        except RecordGone:
            self._fail(
                staff,
                label,
                codes.USER_DELETED_DURING_RUN,
                f"The Active user for {label} was deleted in Active while the sync was running, "
                "so it was not updated.",
                *found,
            )
            return
        except RecordTooLarge:
            self._fail(
                staff, label, codes.RECORD_TOO_LARGE, f"{label} is too large for Active to store.", *found
            )
            return
        self._counts[outcome] += 1
        if existing is not None and existing.email:
            self._forget_old_email(existing, email_key)
        self.directory.user_id_by_email[email_key] = user_id
        self.directory.link(staff.uuid, user_id)
        self._findings.report("user", xpm_uuid=staff.uuid, label=label, entries=(*found, *relinked))

    def _forget_old_email(self, user: StoredUser, email_key: str) -> None:
        """A user whose email the sync just changed no longer answers to the old one: no later
        staff member matches it by that email, and no client's Partner resolves to it."""
        old_key = normalise_email(user.email or "")
        if old_key == email_key:
            return
        # Another Active user with that email still has it (a sign-up twice): it answers to it now,
        # unless a user of this run has taken it (the directory then names that one).
        still = [other for other in self._all_by_email.get(old_key, []) if other.user_id != user.user_id]
        self._all_by_email[old_key] = still
        if self.directory.user_id_by_email.get(old_key) == user.user_id:
            if still:
                self.directory.user_id_by_email[old_key] = still[0].user_id
            else:
                del self.directory.user_id_by_email[old_key]

    def _write(self, existing: StoredUser | None, desired: dict[str, object]) -> tuple[str, str]:
        if existing is None:
            if not self._dry_run:
                return "created", self._store.create("user", desired)
            self._store.check_fits("user", desired)
            return "created", f"planned-{desired['xpm_uuid']}"
        changes = changed_values(existing.synced, desired)
        if not changes:
            return "unchanged", existing.user_id
        if self._dry_run:
            self._store.check_fits("user", {**existing.synced, **changes})
            # A preview counts the Active users it would link to XPM apart (SPEC B6), as clients.
            return ("linked" if existing.xpm_uuid != desired["xpm_uuid"] else "updated"), existing.user_id
        self._store.update("user", existing.user_id, changes)
        return "updated", existing.user_id
