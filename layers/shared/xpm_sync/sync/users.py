"""Staff -> Active users (SPEC A3, A4): match by xpm_uuid, then by email."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from xpm_sync import entries as codes
from xpm_sync.active.repository import ActiveRepository, RecordGone, changed_values
from xpm_sync.entries import Entry, raise_entry
from xpm_sync.mapping import map_staff, normalise_email, staff_label
from xpm_sync.xpm.models import XpmStaff


@dataclass
class UserSyncResult:
    counts: dict[str, int]
    entries: list[Entry] = field(default_factory=list)
    # Every Active user's id by normalised email, after this sync's writes: partners resolve here.
    user_id_by_email: dict[str, str] = field(default_factory=dict)
    # Email of every XPM staff member that has one: AccountManager/JobManager UUIDs resolve here.
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
    result = UserSyncResult(counts=counts)
    for user in stored:
        if user.get("email"):
            result.user_id_by_email.setdefault(normalise_email(str(user["email"])), str(user["user_id"]))

    first_with_email: dict[str, XpmStaff] = {}
    for staff in staff_list:
        if staff.email:
            result.staff_email_by_uuid[staff.uuid] = staff.email
        label = staff_label(staff)
        mapping = map_staff(staff)
        result.entries.extend(mapping.entries)
        if mapping.fields is None:
            counts["failed"] += 1
            continue
        email_key = normalise_email(mapping.fields.email)
        earlier = first_with_email.setdefault(email_key, staff)
        if earlier is not staff:
            result.entries.append(
                raise_entry(
                    codes.STAFF_EMAIL_DUPLICATE,
                    label=label,
                    xpm_uuid=staff.uuid,
                    message=f"{label} has the email {mapping.fields.email}, which {staff_label(earlier)} "
                    "also has in XPM; only the first is synced.",
                )
            )
            counts["failed"] += 1
            continue

        desired: dict[str, object] = {**mapping.fields.model_dump(), "xpm_uuid": staff.uuid}
        existing = by_uuid.get(staff.uuid) or by_email.get(email_key)
        if existing is None:
            user_id = repo.create("user", desired)
            counts["created"] += 1
        else:
            linked_to = existing.get("xpm_uuid")
            if linked_to and linked_to != staff.uuid:
                result.entries.append(
                    raise_entry(
                        codes.USER_LINKED_TO_OTHER_STAFF,
                        label=label,
                        xpm_uuid=staff.uuid,
                        message=f"The Active user {existing.get('email')} is already linked to another "
                        f"XPM staff member, so {label} was not synced.",
                    )
                )
                counts["failed"] += 1
                continue
            user_id = str(existing["user_id"])
            changes = changed_values(existing, desired)
            if changes:
                try:
                    repo.update("user", user_id, changes)
                except RecordGone:
                    result.entries.append(
                        raise_entry(
                            codes.USER_DELETED_DURING_RUN,
                            label=label,
                            xpm_uuid=staff.uuid,
                            message=f"The Active user for {label} was deleted in Active while the sync was "
                            "running, so it was not updated.",
                        )
                    )
                    counts["failed"] += 1
                    continue
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
        result.user_id_by_email[email_key] = user_id
    return result
