"""XPM staff and clients into Active users and clients (SPEC A2, A3): pure functions, no I/O.

Read this module against SPEC A3's tables: :func:`map_staff` and :func:`map_client` follow them
row for row, :func:`client_values` and :func:`user_values` give the attributes as Active stores
them, and :func:`changed_values` compares those with what Active holds. A client's partner and
manager are XPM staff UUIDs here; ``domain.partners`` resolves them to Active users (SPEC A2).

Every problem becomes an :class:`~xpm_sync.domain.entries.Entry`; nothing here raises on bad XPM
data, because one bad record must never stop a firm's run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from xpm_sync.domain import entries
from xpm_sync.domain.active_records import Address, ClientFields, EntityType, SyncedValues, UserFields
from xpm_sync.domain.entries import MAX_LABEL_CHARS, Entry, EntryKind, shorten
from xpm_sync.domain.xpm_records import XpmClientRecord, XpmContact, XpmStaff

INDIVIDUAL_TYPES: frozenset[EntityType] = frozenset({"individual", "sole_trader"})

# BusinessStructure is free text each practice can customise: compared once normalised
# (:func:`structure_key`), by whole name, or by the words "trust" and "estate".
_ENTITY_TYPES: dict[str, EntityType] = {
    "individual": "individual",
    "sole trader": "sole_trader",
    "partnership": "partnership",
    "company": "company",
    "pty ltd": "company",
    "proprietary company": "company",
    "public company": "company",
    "limited company": "company",
    "trust": "trust",
    "estate": "trust",
    "deceased estate": "trust",
    "superannuation fund": "super_fund",
    "super fund": "super_fund",
    "self managed superannuation fund": "super_fund",
    "self managed super fund": "super_fund",
    "smsf": "super_fund",
}
# The same names with their spaces taken out: a name run together in one case ("Soletrader",
# "SELFMANAGEDSUPERFUND", "S.M.S.F") has no capital to split it at.
_ENTITY_TYPES_RUN_TOGETHER: dict[str, EntityType] = {
    key.replace(" ", ""): entity_type for key, entity_type in _ENTITY_TYPES.items()
}
_PARENTHESISED = re.compile(r"\([^)]*\)")
_RUN_TOGETHER = re.compile(r"(?<=[a-z])(?=[A-Z][a-z])")
# Hyphens as people type them, Unicode dashes included (a word processor turns "-" into an en dash),
# and the other marks that part words in a practice's own names ("Trust, Discretionary", "Trust/Unit").
_SEPARATORS = re.compile(r"[-_.,/:;\u2010-\u2015\u2212]")
# Unicode's mandatory line breaks: CR, LF and CRLF (XML turns each line break into LF), and NEL,
# the line and paragraph separators that text pasted from a word processor can carry.
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x85\u2028\u2029]")
_NOT_AN_ASCII_DIGIT = re.compile(r"[^0-9]")
_ABN_WEIGHTS = (10, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19)
# Active finds clients by code through an index (SPEC B3), whose key DynamoDB caps at 1,024 bytes.
MAX_CLIENT_CODE_BYTES = 1024


# --- Helpers ---------------------------------------------------------------------------------
def _text(value: str | None) -> str | None:
    # The XML reader already trims, but the mapping is the last line before Active, so it holds the
    # "empty element is an absent value" rule itself rather than trusting every caller.
    if value is None:
        return None
    return value.strip() or None


def normalise_email(text: str) -> str:
    """The form in which emails are compared (SPEC A2: case-insensitive, trimmed)."""
    return text.strip().lower()


def uuid_key(uuid: str) -> str:
    """The form in which XPM UUIDs are looked up: XPM does not write them in one case everywhere,
    so a client's AccountManager may not spell a staff member's UUID as the staff list does."""
    return uuid.strip().lower()


def split_name(name: str) -> tuple[str, str] | None:
    """First and last name, split at the last run of whitespace; ``None`` for fewer than two words."""
    parts = name.strip().rsplit(maxsplit=1)
    if len(parts) < 2:
        return None
    return parts[0], parts[1]


def split_address(text: str) -> tuple[str | None, str | None, str | None]:
    """Address lines 1-3; a fourth line and beyond join line 3 so no part of the address is lost."""
    lines = [stripped for line in _LINE_BREAK.split(text) if (stripped := line.strip())]
    line1 = lines[0] if len(lines) > 0 else None
    line2 = lines[1] if len(lines) > 1 else None
    line3 = ", ".join(lines[2:]) or None
    return line1, line2, line3


def address(
    lines_text: str | None, suburb: str | None, state: str | None, post_code: str | None
) -> Address | None:
    """An Active address, or ``None`` when XPM has none (so an emptied address empties Active's)."""
    line1, line2, line3 = split_address(lines_text or "")
    result = Address(
        line1=line1,
        line2=line2,
        line3=line3,
        suburb=_text(suburb),
        state=_text(state),
        post_code=_text(post_code),
    )
    return None if result.is_empty() else result


def structure_key(text: str) -> str:
    """BusinessStructure as compared (SPEC A3): a parenthesised part dropped, a word run together
    split ("SoleTrader"), hyphens, underscores, dots (and commas, slashes, colons) as spaces, runs of
    spaces collapsed, any case."""
    text = _PARENTHESISED.sub(" ", text)
    text = _RUN_TOGETHER.sub(" ", text)
    text = _SEPARATORS.sub(" ", text)
    return " ".join(text.split()).casefold()


def map_business_structure(text: str) -> tuple[EntityType | None, bool]:
    """The entity type for XPM's free-text BusinessStructure, and whether it needs a warning.

    ``(None, False)`` means empty (an error for the caller); ``("other", True)`` an unknown value.
    """
    key = structure_key(text)
    if not key:
        return None, False
    entity_type = _ENTITY_TYPES.get(key) or _ENTITY_TYPES_RUN_TOGETHER.get(key.replace(" ", ""))
    if entity_type is not None:
        return entity_type, False
    words = key.split()
    # "Discretionary Trust", "Trust - Unit", "Unit Trust": a trust whatever the practice calls it.
    if words[0] == "trust" or words[-1] == "trust":
        return "trust", False
    return "other", True


def abn_digits(text: str) -> str | None:
    """The digits of a Business Number as people type it ("51 824 753 556"); ``None`` if it has none."""
    # ASCII only: str.isdigit() would also keep superscripts and other scripts' digits, which no
    # ABN contains and the checksum cannot weigh.
    return _NOT_AN_ASCII_DIGIT.sub("", text) or None


def is_valid_abn(digits: str) -> bool:
    """The ATO's ABN check: 11 digits, first less one, weighted sum divisible by 89."""
    if len(digits) != 11 or _NOT_AN_ASCII_DIGIT.search(digits):
        return False
    values = [int(digit) for digit in digits]
    values[0] -= 1
    return sum(weight * value for weight, value in zip(_ABN_WEIGHTS, values, strict=True)) % 89 == 0


def primary_salutation(contacts: Iterable[XpmContact]) -> str | None:
    """The Salutation of the client's primary contact (IsPrimary Yes, else the first not deleted)."""
    live = [contact for contact in contacts if not contact.is_deleted]
    primary = next((contact for contact in live if contact.is_primary), live[0] if live else None)
    return None if primary is None else _text(primary.salutation)


def _first_group(client: XpmClientRecord) -> str | None:
    # A group without a name says nothing to an admin; the next one in XPM's order does.
    return next((name for group in client.groups if (name := _text(group.name))), None)


def legal_name(client: XpmClientRecord) -> str | None:
    """Name; or, as the seed allows, "First Last" when Name is empty and both are set (SPEC A2)."""
    name = _text(client.name)
    if name is not None:
        return name
    first, last = _text(client.first_name), _text(client.last_name)
    return f"{first} {last}" if first and last else None


def client_label(client: XpmClientRecord) -> str:
    """The client as an admin finds it in XPM: "Name (CODE)", or whichever of the two it has."""
    name, code = legal_name(client), _text(client.client_code)
    if name and code:
        # A label is cut at MAX_LABEL_CHARS: a long name gives way, so the code still shows.
        room = MAX_LABEL_CHARS - len(code) - len(" ()")
        return f"{shorten(name, max(room, 1))} ({code})"
    return name or code or (f"XPM client {client.uuid}" if client.uuid else "XPM client without a UUID")


def staff_label(staff: XpmStaff) -> str:
    """The staff member as an admin finds them in XPM: their name, else their email."""
    return (
        _text(staff.name)
        or _text(staff.email)
        or (f"XPM staff {staff.uuid}" if staff.uuid else "XPM staff without a UUID")
    )


# --- Users (SPEC A3, first table) -----------------------------------------------------------
@dataclass(frozen=True)
class UserMapping:
    fields: UserFields | None  # None when an error entry was raised
    entries: tuple[Entry, ...]


def map_staff(staff: XpmStaff) -> UserMapping:
    found: list[Entry] = []

    def problem(kind: EntryKind, message: str) -> None:
        found.append(kind.entry(label=staff_label(staff), message=message, xpm_uuid=staff.uuid))

    name = _text(staff.name)
    names = split_name(name) if name else None
    if name is None:
        problem(entries.STAFF_NAME_MISSING, f"The staff member {staff_label(staff)} has no Name in XPM.")
    elif names is None:
        problem(
            entries.STAFF_SURNAME_MISSING,
            f"The staff member's Name '{name}' is one word; add their surname in XPM.",
        )
    # Stored as XPM has it: only matching folds case (normalise_email).
    email = _text(staff.email)
    if email is None:
        problem(entries.STAFF_EMAIL_MISSING, f"The staff member {staff_label(staff)} has no Email in XPM.")

    if names is None or email is None:
        return UserMapping(fields=None, entries=tuple(found))
    first_name, last_name = names
    return UserMapping(
        fields=UserFields(first_name=first_name, last_name=last_name, email=email),
        entries=tuple(found),
    )


# --- Clients (SPEC A3, second table) --------------------------------------------------------
@dataclass(frozen=True)
class ClientMapping:
    fields: ClientFields | None  # None when an error entry was raised
    partner_uuid: str | None  # AccountManager staff UUID (XPM's "Partner")
    manager_uuid: str | None  # JobManager staff UUID
    entries: tuple[Entry, ...]  # every error and warning found, so one run shows them all


def map_client(client: XpmClientRecord) -> ClientMapping:
    label = client_label(client)
    found: list[Entry] = []

    def problem(kind: EntryKind, message: str) -> None:
        found.append(kind.entry(label=label, message=message, xpm_uuid=client.uuid))

    name = legal_name(client)
    if name is None:
        problem(entries.CLIENT_NAME_MISSING, f"The client {label} has no Name in XPM.")

    code = _text(client.client_code)
    if code is None:
        problem(entries.CLIENT_CODE_MISSING, f"The client {label} has no Client Code in XPM.")
    elif len(code.encode("utf-8")) > MAX_CLIENT_CODE_BYTES:
        problem(
            entries.CLIENT_CODE_TOO_LONG,
            f"The client {label} has a Client Code of {len(code.encode('utf-8')):,} bytes in XPM.",
        )

    structure = _text(client.business_structure)
    entity_type, unknown_structure = map_business_structure(structure or "")
    if entity_type is None:
        problem(
            entries.BUSINESS_STRUCTURE_MISSING,
            f"The client {label} has no Business Structure in XPM."
            if structure is None
            else f"The client {label} has a Business Structure of '{structure}' in XPM, which names none.",
        )
    elif unknown_structure:
        problem(
            entries.BUSINESS_STRUCTURE_UNKNOWN,
            f"Business Structure '{structure}' is not one Active knows; synced as entity type 'other'.",
        )

    first_name, last_name = _text(client.first_name), _text(client.last_name)
    if entity_type in INDIVIDUAL_TYPES:
        missing = [
            part for part, value in (("First name", first_name), ("Last name", last_name)) if not value
        ]
        if missing:
            problem(
                entries.INDIVIDUAL_NAME_MISSING,
                f"The client's Business Structure is {structure}, "
                f"but it has no {' and no '.join(missing)} in XPM.",
            )

    business_number = _text(client.business_number)
    abn = abn_digits(business_number) if business_number else None
    if business_number and abn is None:
        problem(
            entries.ABN_INVALID,
            f"Business Number '{business_number}' has no digits, so the client's ABN was left empty.",
        )
    elif abn is not None and not is_valid_abn(abn):
        problem(
            entries.ABN_INVALID, f"Business Number '{business_number}' is not a valid ABN; synced as {abn}."
        )

    partner_uuid, manager_uuid = _text(client.account_manager_uuid), _text(client.job_manager_uuid)
    if any(entry.severity == "error" for entry in found) or not (name and code and entity_type):
        return ClientMapping(None, partner_uuid, manager_uuid, tuple(found))

    fields = ClientFields(
        legal_name=name,
        individual_title=_text(client.title),
        email=_text(client.email),
        telephone=_text(client.phone),
        fax=_text(client.fax),
        code=code,
        residential_address=address(client.address, client.city, client.region, client.post_code),
        postal_address=address(
            client.postal_address, client.postal_city, client.postal_region, client.postal_post_code
        ),
        client_group=_first_group(client),
        abn=abn,
        entity_type=entity_type,
        individual_first_name=first_name,
        individual_last_name=last_name,
        individual_salutation=primary_salutation(client.contacts),
    )
    return ClientMapping(fields, partner_uuid, manager_uuid, tuple(found))


# --- As Active stores them (SPEC B3) ---------------------------------------------------------
def _address_value(address: Address | None) -> dict[str, str] | None:
    if address is None:
        return None
    return {name: value for name, value in address.model_dump().items() if value is not None} or None


def client_values(
    fields: ClientFields, *, xpm_uuid: str, partner_user_id: str, manager_user_id: str | None
) -> dict[str, object]:
    """Every attribute the sync owns on a live client, as the Active item holds it (None = absent)."""
    return {
        **fields.model_dump(exclude={"residential_address", "postal_address"}),
        "residential_address": _address_value(fields.residential_address),
        "postal_address": _address_value(fields.postal_address),
        "partner_user_id": partner_user_id,
        "manager_user_id": manager_user_id,
        "xpm_uuid": xpm_uuid,
        "xpm_archived": False,
    }


def user_values(fields: UserFields, *, xpm_uuid: str) -> dict[str, object]:
    """Every attribute the sync owns on a user, as the Active item holds it."""
    return {**fields.model_dump(), "xpm_uuid": xpm_uuid}


def changed_values(stored: SyncedValues, desired: SyncedValues) -> dict[str, object]:
    """The synced attributes whose stored value differs from the desired one (None = remove)."""
    changes: dict[str, object] = {}
    for name, value in desired.items():
        current = stored.get(name)
        if value is None:
            if current is not None:
                changes[name] = None
        elif current != value:
            changes[name] = value
    return changes
