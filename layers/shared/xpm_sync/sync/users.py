"""Staff -> Active users (SPEC A3, A4): match by xpm_uuid, then by email."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from xpm_sync.adapters.active_table import ActiveRepository, RecordGone, changed_values
from xpm_sync.domain import entries as codes
from xpm_sync.domain.active_records import UserFields
from xpm_sync.domain.entries import Entry, EntryKind
from xpm_sync.domain.mapping import map_staff, normalise_email, staff_label, uuid_key
from xpm_sync.domain.xpm_records import XpmStaff


@dataclass
class UserSyncResult:
    counts: dict[str, int]
    entries: list[Entry] = field(default_factory=list)
    # Every Active user's id by normalised email, after this sync's writes: partners resolve here.
    user_id_by_email: dict[str, str] = field(default_factory=dict)
    # Email of every XPM staff member that has one, by uuid_key: AccountManager/JobManager resolve here.
    staff_email_by_uuid: dict[str, str] = field(default_factory=dict)


def sync_users(
    repo: ActiveRepository, staff_list: Iterable[XpmStaff], counts: dict[str, int]
) -> UserSyncResult:
    stored = repo.users()
    by_uuid: dict[str, dict[str, Any]] = {u["xpm_uuid"]: u for u in stored if u.get("xpm_uuid")}
    by_email: dict[str, dict[str, Any]] = {}
    for user in stored:
        if user.get("email"):
            by_email.setdefault(normalise_email(str(user["email"])), user)
    result = UserSyncResult(
        counts=counts, user_id_by_email={key: str(user["user_id"]) for key, user in by_email.items()}
    )
    first_with_email: dict[str, XpmStaff] = {}
    for staff in staff_list:
        if staff.email:
            result.staff_email_by_uuid[uuid_key(staff.uuid)] = staff.email
        mapping = map_staff(staff)
        result.entries.extend(mapping.entries)
        if mapping.fields is None:
            counts["failed"] += 1
            continue
        email_key = normalise_email(mapping.fields.email)
        outcome = _sync_one(
            repo,
            staff,
            mapping.fields,
            existing=by_uuid.get(staff.uuid) or by_email.get(email_key),
            earlier=first_with_email.setdefault(email_key, staff),
        )
        if isinstance(outcome, Entry):
            result.entries.append(outcome)
            counts["failed"] += 1
            continue
        user_id, counted = outcome
        counts[counted] += 1
        result.user_id_by_email[email_key] = user_id
    return result


def _sync_one(
    repo: ActiveRepository,
    staff: XpmStaff,
    fields: UserFields,
    *,
    existing: dict[str, Any] | None,
    earlier: XpmStaff,
) -> Entry | tuple[str, str]:
    """Write one staff member's user: (user id, outcome), or the entry saying why it was not."""
    label = staff_label(staff)

    def problem(kind: EntryKind, message: str) -> Entry:
        return kind.entry(label=label, xpm_uuid=staff.uuid, message=message)

    if earlier is not staff:
        return problem(
            codes.STAFF_EMAIL_DUPLICATE,
            f"{label} has the email {fields.email}, which {staff_label(earlier)} also has in XPM; "
            "only the first is synced.",
        )
    desired: dict[str, object] = {**fields.model_dump(), "xpm_uuid": staff.uuid}
    if existing is None:
        return repo.create("user", desired), "created"
    linked_to = existing.get("xpm_uuid")
    if linked_to and linked_to != staff.uuid:
        return problem(
            codes.USER_LINKED_TO_OTHER_STAFF,
            f"The Active user {existing.get('email')} is already linked to another XPM staff member, "
            f"so {label} was not synced.",
        )
    user_id = str(existing["user_id"])
    changes = changed_values(existing, desired)
    if not changes:
        return user_id, "unchanged"
    try:
        repo.update("user", user_id, changes)
    except RecordGone:
        return problem(
            codes.USER_DELETED_DURING_RUN,
            f"The Active user for {label} was deleted in Active while the sync was running, "
            "so it was not updated.",
        )
    return user_id, "updated"
