"""The error log: every problem a run meets becomes an :class:`Entry` (SPEC A5).

Each entry code is declared once here, with its severity, what causes it and the suggestion an
admin reads. ``docs/entry-codes.md`` is generated from :data:`CATALOGUE`, so the published
catalogue and the code that raises the entries cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["error", "warning"]
EntryEntity = Literal["user", "client", "run"]


@dataclass(frozen=True)
class EntryKind:
    code: str
    severity: Severity
    entity: EntryEntity
    cause: str
    suggestion: str

    def entry(
        self,
        *,
        label: str,
        message: str,
        xpm_uuid: str | None = None,
        entity: EntryEntity | None = None,
    ) -> Entry:
        """One line of the error log of this kind, about the record an admin knows as ``label``.

        ``entity`` is for the few kinds that can concern a staff member or a client. Label and
        message are cut to a length an admin can read: they quote XPM's values, and one XPM field
        can be hundreds of kilobytes (SPEC A4, ``RECORD_TOO_LARGE``).
        """
        return Entry(
            severity=self.severity,
            entity=entity or self.entity,
            xpm_uuid=xpm_uuid or None,
            label=shorten(label, MAX_LABEL_CHARS),
            code=self.code,
            message=shorten(message, MAX_MESSAGE_CHARS),
            suggestion=self.suggestion,
        )


CATALOGUE: dict[str, EntryKind] = {}
MAX_LABEL_CHARS = 200
MAX_MESSAGE_CHARS = 1000


# Entry messages quote text from XPM and Xero. None should ever carry a credential, but a gateway
# that echoes the request would put the firm's bearer token in its answer: anything shaped like a
# bearer token or a JWT is masked before it can reach a run's log, an API answer or an email.
_TOKEN_LIKE = re.compile(
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)


def without_credentials(text: str) -> str:
    """``text`` with anything shaped like a bearer token or a JWT masked."""
    return _TOKEN_LIKE.sub("[redacted]", text)


def shorten(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters ending in an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(code: str, severity: Severity, entity: EntryEntity, cause: str, suggestion: str) -> EntryKind:
    kind = EntryKind(code, severity, entity, cause, suggestion)
    if code in CATALOGUE:
        raise ValueError(f"entry code {code} declared twice")
    CATALOGUE[code] = kind
    return kind


class Entry(BaseModel):
    """One line of a run's error log, as stored and as the runs API returns it."""

    model_config = ConfigDict(frozen=True)

    severity: Severity
    entity: EntryEntity
    xpm_uuid: str | None = None
    label: str
    code: str
    message: str
    suggestion: str


# --- Staff -> Active users -------------------------------------------------------------------
STAFF_NAME_MISSING = _kind(
    "STAFF_NAME_MISSING",
    "error",
    "user",
    "An XPM staff member has no Name.",
    "Enter the staff member's full name in XPM (Business -> Settings -> Staff)",
)
STAFF_SURNAME_MISSING = _kind(
    "STAFF_SURNAME_MISSING",
    "error",
    "user",
    "An XPM staff member's Name is a single word, so Active cannot tell the first name from the surname.",
    "Enter the staff member's first name and surname in XPM (Business -> Settings -> Staff)",
)
STAFF_EMAIL_MISSING = _kind(
    "STAFF_EMAIL_MISSING",
    "error",
    "user",
    "An XPM staff member has no Email; Active users sign in with their email.",
    "Enter the staff member's email address in XPM (Business -> Settings -> Staff)",
)
STAFF_EMAIL_DUPLICATE = _kind(
    "STAFF_EMAIL_DUPLICATE",
    "error",
    "user",
    "Two XPM staff members share one Email; only the first (in XPM's order) is synced.",
    "Give each staff member their own email address in XPM",
)
USER_LINKED_TO_OTHER_STAFF = _kind(
    "USER_LINKED_TO_OTHER_STAFF",
    "error",
    "user",
    "The Active user with this staff member's email is already linked to another XPM staff member.",
    "Check which XPM staff member should own this email, and correct the other one in XPM",
)
STAFF_EMAIL_TAKEN = _kind(
    "STAFF_EMAIL_TAKEN",
    "error",
    "user",
    "The email this staff member now has in XPM belongs to another Active user, so the linked user "
    "keeps its email.",
    "Give one of the two another email: the staff member in XPM, or the other user in Active",
)

USER_RELINKED = _kind(
    "USER_RELINKED",
    "warning",
    "user",
    "The Active user with this staff member's email was linked to an XPM staff member that XPM no "
    "longer lists (removed and added again, say): it now follows this one, instead of failing.",
    "Nothing to do if the staff member was re-created in XPM on purpose",
)

USER_DELETED_DURING_RUN = _kind(
    "USER_DELETED_DURING_RUN",
    "error",
    "user",
    "The Active user linked to this staff member was deleted in Active while the sync was running.",
    "Nothing to do if that was intended: the next sync creates the user again from XPM",
)

STAFF_UUID_MISSING = _kind(
    "STAFF_UUID_MISSING",
    "error",
    "user",
    "XPM sent a staff record without its UUID, so it cannot be matched to an Active user; the other "
    "staff members were synced.",
    "Nothing to fix in Active. If it persists, contact support with this run's id",
)

# --- Either kind of record ---------------------------------------------------------------------
XPM_UUID_REPEATED = _kind(
    "XPM_UUID_REPEATED",
    "error",
    "client",
    "XPM sent the same record (UUID) more than once in one answer; the first copy was synced and "
    "the later one dropped, so no two Active records share it.",
    "Nothing to fix: the next sync reads the record again. If it persists, contact support with "
    "this run's id",
)
RECORD_TOO_LARGE = _kind(
    "RECORD_TOO_LARGE",
    "error",
    "client",
    "The record is too large for Active to store (a field holds hundreds of kilobytes); it was not "
    "written, and the records beside it were.",
    "Shorten the record's long fields (name, address, notes) in XPM; the next sync picks it up",
)

# --- Clients -> Active clients ---------------------------------------------------------------
CLIENT_UUID_MISSING = _kind(
    "CLIENT_UUID_MISSING",
    "error",
    "client",
    "XPM sent a client record without its UUID, so it cannot be matched to an Active client; the "
    "other clients were synced.",
    "Nothing to fix in Active. If it persists, contact support with this run's id",
)
CLIENT_RELINKED = _kind(
    "CLIENT_RELINKED",
    "warning",
    "client",
    "A client archived or deleted in XPM was re-created there with the same code: the new XPM "
    "client took over the Active client that held the code, instead of making a second one.",
    "Nothing to do if the XPM client was re-created on purpose; otherwise give one of the two a "
    "different code in XPM",
)
NEAR_MATCH = _kind(
    "NEAR_MATCH",
    "warning",
    "client",
    "An XPM client matches no Active client by code, but an Active client without a link to XPM has "
    "the same ABN or name: it waits for an admin to say whether they are the same client.",
    "Open Sync Monitoring -> Suggested links and choose Link (the same client) or Create (a new one)",
)
CLIENT_NAME_MISSING = _kind(
    "CLIENT_NAME_MISSING",
    "error",
    "client",
    "An XPM client has no Name.",
    "Enter the client's name in XPM",
)
CLIENT_CODE_MISSING = _kind(
    "CLIENT_CODE_MISSING",
    "error",
    "client",
    "An XPM client has no Client Code; client codes identify clients in both systems.",
    "Enter a Client Code for this client in XPM",
)
CLIENT_CODE_TOO_LONG = _kind(
    "CLIENT_CODE_TOO_LONG",
    "error",
    "client",
    "An XPM client's Client Code is longer than Active can find clients by (1,024 bytes); the "
    "client was not synced, and the others were.",
    "Shorten the Client Code in XPM; the next sync picks it up",
)
CLIENT_CODE_DUPLICATE = _kind(
    "CLIENT_CODE_DUPLICATE",
    "error",
    "client",
    "Two XPM clients share one Client Code; the first (in XPM's order) is synced, the other is not.",
    "Give each client its own Client Code in XPM",
)
CLIENT_CODE_TAKEN = _kind(
    "CLIENT_CODE_TAKEN",
    "error",
    "client",
    "A linked client's new Client Code in XPM is already the code of another Active client.",
    "Give the client a code no other client uses, in XPM, or change the other client's code in Active",
)
CLIENT_DELETED_DURING_RUN = _kind(
    "CLIENT_DELETED_DURING_RUN",
    "error",
    "client",
    "The Active client linked to this XPM client was deleted in Active while the sync was running.",
    "Nothing to do if that was intended: the next sync creates the client again from XPM",
)
BUSINESS_STRUCTURE_MISSING = _kind(
    "BUSINESS_STRUCTURE_MISSING",
    "error",
    "client",
    "An XPM client has no Business Structure, which Active needs as the client's entity type.",
    "Set the client's Business Structure in XPM",
)
BUSINESS_STRUCTURE_UNKNOWN = _kind(
    "BUSINESS_STRUCTURE_UNKNOWN",
    "warning",
    "client",
    "The client's Business Structure is not one Active knows; it was synced with entity type 'other'.",
    "Use one of Individual, Sole Trader, Partnership, Company, Trust or Superannuation Fund in XPM, "
    "or leave it if 'other' is right",
)
INDIVIDUAL_NAME_MISSING = _kind(
    "INDIVIDUAL_NAME_MISSING",
    "error",
    "client",
    "An individual (or sole trader) client has no First name or no Last name in XPM.",
    "Enter the client's first name and last name in XPM",
)
PARTNER_MISSING = _kind(
    "PARTNER_MISSING",
    "error",
    "client",
    "The client has no Partner in XPM and the firm has no Default Partner.",
    "Assign a partner in XPM, or set a Default Partner in Admin Centre -> Office",
)
PARTNER_NOT_IN_ACTIVE = _kind(
    "PARTNER_NOT_IN_ACTIVE",
    "error",
    "client",
    "The client's Partner in XPM has no Active user with the same email.",
    "Add this partner to Active as a user with the same email as in XPM",
)
MANAGER_NOT_IN_ACTIVE = _kind(
    "MANAGER_NOT_IN_ACTIVE",
    "warning",
    "client",
    "The client's Manager in XPM has no Active user with the same email; the manager was left empty.",
    "Add this manager to Active as a user with the same email as in XPM",
)
MANAGER_NOT_IN_XPM_STAFF = _kind(
    "MANAGER_NOT_IN_XPM_STAFF",
    "warning",
    "client",
    "The client's Manager is not in XPM's staff list (or has no email there), so it cannot be matched "
    "to an Active user; the manager was left empty.",
    "Assign a current staff member with an email address as the client's Manager in XPM, or none",
)
ABN_INVALID = _kind(
    "ABN_INVALID",
    "warning",
    "client",
    "The client's Business Number is not a valid ABN (11 digits with a valid checksum); it was "
    "synced as entered.",
    "Check the ABN in XPM against the Australian Business Register",
)

# --- Run level -------------------------------------------------------------------------------
CONNECTION_OWNER_NOT_IN_XPM = _kind(
    "CONNECTION_OWNER_NOT_IN_XPM",
    "warning",
    "run",
    "The person who connected XPM is no longer in XPM's staff list: the connection breaks when "
    "Xero removes their access.",
    "Reconnect as another XPM admin: Admin Centre -> Integrations -> Xero Practice Manager -> Connect",
)
DEFAULT_PARTNER_NOT_IN_ACTIVE = _kind(
    "DEFAULT_PARTNER_NOT_IN_ACTIVE",
    "error",
    "run",
    "The default office's Default Partner is no longer an Active user; clients without a Partner in "
    "XPM cannot use it.",
    "Choose an existing user as the Default Partner in Admin Centre -> Office",
)
XPM_TOO_SLOW = _kind(
    "XPM_TOO_SLOW",
    "error",
    "run",
    "XPM answered so slowly that two parts of the run in a row could apply no record before their "
    "time ran out.",
    "Nothing to do: the next hourly sync tries again. If it keeps failing, check Xero's status page",
)
XPM_NEEDS_RECONNECT = _kind(
    "XPM_NEEDS_RECONNECT",
    "error",
    "run",
    "Xero refused the firm's connection: it was revoked, expired after 60 days unused, or the "
    "person who connected lost access.",
    "Reconnect in Active: Admin Centre -> Integrations -> Xero Practice Manager -> Connect",
)
XPM_WRONG_TENANT = _kind(
    "XPM_WRONG_TENANT",
    "error",
    "run",
    "XPM refused access to the chosen practice (tenant); the connection no longer covers it.",
    "Reconnect and choose the practice again in the XPM integration settings",
)
XPM_UNAVAILABLE = _kind(
    "XPM_UNAVAILABLE",
    "error",
    "run",
    "XPM did not answer, or answered with a server error, after several tries.",
    "Nothing to do: the next hourly sync will try again. If it keeps failing, check Xero's status page",
)
XPM_RATE_LIMITED = _kind(
    "XPM_RATE_LIMITED",
    "error",
    "run",
    "XPM's rate limit for this practice was reached (per minute or per day).",
    "Avoid pressing Start Sync repeatedly; the next hourly sync will continue",
)
XPM_BAD_RESPONSE = _kind(
    "XPM_BAD_RESPONSE",
    "error",
    "run",
    "XPM answered with an error or with data that could not be read.",
    "The next hourly sync will try again. If it keeps failing, contact support with this run's id",
)
XERO_APP_CREDENTIALS_INVALID = _kind(
    "XERO_APP_CREDENTIALS_INVALID",
    "error",
    "run",
    "Xero refused the integration's own app credentials (client id and secret) while renewing the "
    "firm's access, or they could not be read; nothing is wrong with the firm's connection or data.",
    "Nothing to fix in XPM or Active: contact support with this run's id. Operators: check the Xero "
    "app credentials secret (APP_SECRET_ID) against the app in Xero's developer portal",
)
SYNC_NOT_CONFIGURED = _kind(
    "SYNC_NOT_CONFIGURED",
    "error",
    "run",
    "The integration has no XPM practice or default office chosen yet.",
    "Finish the setup in Admin Centre -> Integrations -> Xero Practice Manager",
)
SYNC_SETUP_CHANGED = _kind(
    "SYNC_SETUP_CHANGED",
    "warning",
    "run",
    "The integration was reconnected or given another XPM practice between two parts of this run, "
    "so the run stopped there.",
    "Nothing to do: the next run reads every client of the practice now chosen",
)
DEFAULT_OFFICE_MISSING = _kind(
    "DEFAULT_OFFICE_MISSING",
    "error",
    "run",
    "The default office chosen for the integration no longer exists in Active.",
    "Choose an existing Default Office Code in the XPM integration settings",
)
NOTIFICATION_USER_INVALID = _kind(
    "NOTIFICATION_USER_INVALID",
    "warning",
    "run",
    "The run needed an email to the firm's notification user, but none is chosen, the chosen user "
    "no longer exists in Active, or the user has no valid email address; no email was sent.",
    "Choose an Active user with an email address as the notification user in Admin Centre -> "
    "Integrations -> Xero Practice Manager",
)
INTERNAL_ERROR = _kind(
    "INTERNAL_ERROR",
    "error",
    "run",
    "The sync stopped on an unexpected error; nothing was lost and it will be retried.",
    "The next hourly sync will try again. If it keeps failing, contact support with this run's id",
)
