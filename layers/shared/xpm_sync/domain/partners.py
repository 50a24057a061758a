"""A client's Partner and Manager as Active users (SPEC A2), all in one place.

XPM links a client to staff by UUID (``AccountManager`` is XPM's "Partner", ``JobManager`` the
manager). Active links it to users. The bridge is the email: the staff member's email in XPM must
be an Active user's email (case-insensitive, trimmed). A client with no Partner in XPM takes the
firm's default partner when one is set; a Partner that is set but cannot be resolved is an error
even then. An unresolved Manager is a warning and leaves the manager empty.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

from xpm_sync.domain import entries
from xpm_sync.domain.entries import Entry, EntryKind
from xpm_sync.domain.mapping import ClientMapping, normalise_email, uuid_key


@dataclass(frozen=True)
class ResolvedPeople:
    partner_user_id: str | None  # None: the client cannot be synced (an error entry says why)
    manager_user_id: str | None
    entries: tuple[Entry, ...]


class StaffMatch(NamedTuple):
    """What one XPM staff member resolves to."""

    email: str | None  # None: not in XPM's staff list, or no email there
    user_id: str | None  # None: no Active user for them
    # The Active user with their email is another listed staff member's (who has another email now).
    held_by_other: bool = False


@dataclass
class PeopleDirectory:
    """Who is who on both sides, as one run knows it after syncing users.

    ``staff_email_by_uuid``: :func:`uuid_key` of each XPM staff UUID -> that staff member's email.
    ``user_id_by_email``: :func:`normalise_email` of each Active user's email -> the user's id.
    ``default_partner_user_id``: the default office's Default Partner, when it is an Active user.

    A staff member linked to an Active user (its ``xpm_uuid``, :meth:`link`) resolves to that user
    (SPEC A4: users match by ``xpm_uuid`` first), even when this run could not sync them; one not
    linked resolves by email (SPEC A2), but not to a user linked to another staff member XPM lists
    under another email now: that user is someone else to Active (a newcomer given a colleague's
    old email), and a client would silently change hands. Two staff XPM lists with one email both
    resolve to its user.
    """

    staff_email_by_uuid: dict[str, str] = field(default_factory=dict)
    user_id_by_email: dict[str, str] = field(default_factory=dict)
    default_partner_user_id: str | None = None
    _user_by_staff: dict[str, str] = field(default_factory=dict)
    _linked_users: dict[str, str] = field(default_factory=dict)  # user id -> uuid_key of its staff

    def link(self, staff_uuid: str, user_id: str) -> None:
        """The listed staff member ``staff_uuid`` is the Active user ``user_id``."""
        key = uuid_key(staff_uuid)
        previous = self._user_by_staff.get(key)
        if previous is not None and self._linked_users.get(previous) == key:
            del self._linked_users[previous]
        self._user_by_staff[key] = user_id
        self._linked_users[user_id] = key

    def has_staff_email(self, email: str) -> bool:
        wanted = normalise_email(email)
        return any(normalise_email(known) == wanted for known in self.staff_email_by_uuid.values())

    def resolves_partner(self, mapping: ClientMapping) -> bool:
        """Whether the client's Partner (or, with none, the default partner) is an Active user."""
        if mapping.partner_uuid is None:
            return self.default_partner_user_id is not None
        return self._user_of(mapping.partner_uuid).user_id is not None

    def resolve(self, mapping: ClientMapping, *, label: str, xpm_uuid: str) -> ResolvedPeople:
        """The Active users for a client's XPM Partner and Manager; only the entries found here
        are returned (``mapping.entries`` stay with the caller)."""
        found: list[Entry] = []

        def problem(kind: EntryKind, message: str) -> None:
            found.append(kind.entry(label=label, message=message, xpm_uuid=xpm_uuid))

        partner_user_id: str | None = None
        if mapping.partner_uuid is None:
            # The default partner stands in only for a missing Partner, never for an unresolvable one.
            partner_user_id = self.default_partner_user_id
            if partner_user_id is None:
                problem(
                    entries.PARTNER_MISSING,
                    "The client has no Partner in XPM and the firm has no Default Partner.",
                )
        else:
            partner_email, partner_user_id, partner_held_by_other = self._user_of(mapping.partner_uuid)
            if partner_held_by_other:
                problem(
                    entries.PARTNER_NOT_IN_ACTIVE,
                    f"The client's Partner has the email {partner_email} in XPM, but the Active user "
                    "with it is linked to another XPM staff member (see that staff member's problem).",
                )
            elif partner_email is None:
                # SPEC A2 names one error for a Partner with no Active user; the message says why
                # none can be matched here (no email in XPM to match a user by) and what to do.
                problem(
                    entries.PARTNER_NOT_IN_ACTIVE,
                    f"The client's Partner (XPM staff {mapping.partner_uuid}) is not in XPM's staff list "
                    "or has no email there, so no Active user can be matched to it: give the staff "
                    "member an email in XPM, or assign a current staff member as the client's Partner.",
                )
            elif partner_user_id is None:
                problem(
                    entries.PARTNER_NOT_IN_ACTIVE,
                    f"The client's Partner {partner_email} has no Active user with that email.",
                )

        manager_user_id: str | None = None
        if mapping.manager_uuid is not None:
            manager_email, manager_user_id, manager_held_by_other = self._user_of(mapping.manager_uuid)
            if manager_held_by_other:
                problem(
                    entries.MANAGER_NOT_IN_ACTIVE,
                    f"The client's Manager has the email {manager_email} in XPM, but the Active user "
                    "with it is linked to another XPM staff member; the manager was left empty.",
                )
            elif manager_email is None:
                # Nothing Active can do: XPM has no email to match a user by (SPEC A5's suggestion).
                problem(
                    entries.MANAGER_NOT_IN_XPM_STAFF,
                    f"The client's Manager (XPM staff {mapping.manager_uuid}) is not in XPM's staff list "
                    "or has no email there; the manager was left empty.",
                )
            elif manager_user_id is None:
                problem(
                    entries.MANAGER_NOT_IN_ACTIVE,
                    f"The client's Manager {manager_email} has no Active user with that email; the "
                    "manager was left empty.",
                )
        return ResolvedPeople(partner_user_id, manager_user_id, tuple(found))

    def digest(self) -> str:
        """What every XPM staff member resolves to (an email, an Active user), as one short text: a
        client whose Manager did not resolve may resolve once it changes, and not before."""
        resolved = sorted(
            f"{uuid}={match.email is not None}={match.user_id or ''}"
            for uuid in self.staff_email_by_uuid
            for match in (self._user_of(uuid),)
        )
        return hashlib.sha256("\n".join(resolved).encode()).hexdigest()[:32]

    def _user_of(self, staff_uuid: str) -> StaffMatch:
        """The XPM staff member's email and their Active user: the one linked to them, else the one
        with that email, unless it is linked to another listed staff member who has another email
        in XPM now (the user is theirs, not this email's)."""
        key = uuid_key(staff_uuid)
        email = (self.staff_email_by_uuid.get(key) or "").strip() or None
        if email is None:
            return StaffMatch(None, None)
        if (linked := self._user_by_staff.get(key)) is not None:
            return StaffMatch(email, linked)
        user_id = self.user_id_by_email.get(normalise_email(email))
        other = self._linked_users.get(user_id) if user_id is not None else None
        other_email = normalise_email(self.staff_email_by_uuid.get(other) or "") if other else None
        if other not in (None, key) and other_email != normalise_email(email):
            return StaffMatch(email, None, held_by_other=True)
        return StaffMatch(email, user_id)
