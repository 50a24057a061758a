"""Properties of the mapping over arbitrary XPM text: it never raises, and never loses address text."""

from __future__ import annotations

import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from xpm_sync.domain.active_records import ClientFields
from xpm_sync.domain.mapping import (
    abn_digits,
    is_valid_abn,
    map_business_structure,
    map_client,
    map_staff,
    split_address,
    split_name,
    structure_key,
)
from xpm_sync.domain.xpm_records import XpmClientRecord, XpmContact, XpmGroup, XpmStaff

from tests.fixtures.mapping import resolve_people

FAST = settings(max_examples=200, deadline=None)

# Whitespace, line breaks and control characters are where trimming and splitting go wrong, so
# they are drawn far more often than plain text alone would draw them.
awkward = st.sampled_from([" ", "\t", "\n", "\r", "\r\n", "\x00", "\x0b", "\x1c", "\x85", "\u00a0", "\u2028"])
any_text = st.lists(st.one_of(st.text(max_size=6), awkward), max_size=6).map("".join)
maybe_text = st.none() | any_text
structures = st.sampled_from(["Individual", " sole trader ", "Company", "Family Trust", "SMSF", "Club"])

contacts = st.builds(
    XpmContact,
    uuid=maybe_text,
    name=maybe_text,
    salutation=maybe_text,
    is_primary=st.booleans(),
    is_deleted=st.booleans(),
)
groups = st.builds(XpmGroup, uuid=maybe_text, name=maybe_text)
clients = st.builds(
    XpmClientRecord,
    uuid=any_text,
    name=maybe_text,
    title=maybe_text,
    first_name=maybe_text,
    last_name=maybe_text,
    email=maybe_text,
    phone=maybe_text,
    fax=maybe_text,
    client_code=maybe_text,
    address=maybe_text,
    city=maybe_text,
    region=maybe_text,
    post_code=maybe_text,
    postal_address=maybe_text,
    postal_city=maybe_text,
    postal_region=maybe_text,
    postal_post_code=maybe_text,
    business_number=maybe_text | st.from_regex(r"[0-9 ]{9,14}", fullmatch=True),
    business_structure=maybe_text | structures,
    account_manager_uuid=maybe_text,
    job_manager_uuid=maybe_text,
    is_archived=st.booleans(),
    is_deleted=st.booleans(),
    is_prospect=st.booleans(),
    contacts=st.lists(contacts, max_size=3).map(tuple),
    groups=st.lists(groups, max_size=3).map(tuple),
)


def _strings(fields: ClientFields) -> list[str]:
    dumped = fields.model_dump()
    values = [value for value in dumped.values() if isinstance(value, str)]
    for nested in dumped.values():
        if isinstance(nested, dict):
            values += [value for value in nested.values() if value is not None]
    return values


@FAST
@given(clients)
def test_any_xpm_client_maps_to_valid_fields_or_to_error_entries(client: XpmClientRecord) -> None:
    mapping = map_client(client)

    errors = [entry for entry in mapping.entries if entry.severity == "error"]
    if mapping.fields is None:
        assert errors
    else:
        assert not errors
        assert ClientFields.model_validate(mapping.fields.model_dump()) == mapping.fields
        for value in _strings(mapping.fields):
            assert value
            assert value == value.strip()
        assert mapping.fields.abn is None or mapping.fields.abn.isascii()
    assert all(entry.xpm_uuid == (client.uuid or None) for entry in mapping.entries)


# A small pool of staff, so that lookups hit, miss and half-hit (staff without an Active user).
staff_uuids = st.sampled_from(["s1", "s2", "s3", " s1 "]) | maybe_text
staff_emails = st.dictionaries(
    st.sampled_from(["s1", "s2", "s3"]), st.sampled_from(["A@x", " a@x ", "b@x", ""])
)
active_users = st.dictionaries(st.sampled_from(["a@x", "b@x", "A@x"]), st.sampled_from(["u-a", "u-b"]))


@FAST
@given(staff_uuids, staff_uuids, staff_emails, active_users, st.none() | st.sampled_from(["", "u-default"]))
def test_resolving_people_never_raises_and_always_settles_the_partner(
    partner_uuid: str | None,
    manager_uuid: str | None,
    staff_email_by_uuid: dict[str, str],
    user_id_by_email: dict[str, str],
    default_partner_user_id: str | None,
) -> None:
    mapping = map_client(
        XpmClientRecord(uuid="c", account_manager_uuid=partner_uuid, job_manager_uuid=manager_uuid)
    )

    result = resolve_people(
        mapping,
        label="label",
        xpm_uuid="c",
        staff_email_by_uuid=staff_email_by_uuid,
        user_id_by_email=user_id_by_email,
        default_partner_user_id=default_partner_user_id,
    )

    partner_errors = [entry for entry in result.entries if entry.code.startswith("PARTNER_")]
    assert (result.partner_user_id is None) == bool(partner_errors)
    assert all(entry.severity == "warning" for entry in result.entries if entry.code.startswith("MANAGER_"))
    if mapping.partner_uuid is not None:
        assert result.partner_user_id != "u-default"


@FAST
@given(st.builds(XpmStaff, uuid=any_text, name=maybe_text, email=maybe_text))
def test_any_xpm_staff_maps_to_a_user_or_to_error_entries(staff: XpmStaff) -> None:
    mapping = map_staff(staff)

    if mapping.fields is None:
        assert mapping.entries
    else:
        assert mapping.entries == ()
        assert all(value and value == value.strip() for value in mapping.fields.model_dump().values())


@FAST
@given(any_text)
def test_split_address_never_loses_a_non_blank_lines_text(text: str) -> None:
    # Python's own lines are Unicode's, but for the information separators (not line breaks).
    assume(not any(char in text for char in "\x1c\x1d\x1e"))
    kept = [line.strip() for line in text.splitlines() if line.strip()]

    lines = split_address(text)

    assert ", ".join(line for line in lines if line is not None) == ", ".join(kept)
    assert [line is not None for line in lines] == [index < len(kept) for index in range(3)]


@FAST
@given(any_text)
def test_split_name_rejoins_to_the_trimmed_name(name: str) -> None:
    parts = split_name(name)

    if parts is not None:
        first, last = parts
        assert first
        assert last
        assert not any(char.isspace() for char in last)
        assert name.strip().startswith(first)
        assert name.strip().endswith(last)


@FAST
@given(any_text)
def test_any_business_structure_text_maps_to_an_entity_type_or_is_empty(text: str) -> None:
    entity_type, warn = map_business_structure(text)

    # Empty once compared (SPEC A3): blank, or only separators and a parenthesised part ("_", "-",
    # "(none)"), which name no structure either: an error, not "other".
    assert (entity_type is None) == (not structure_key(text))
    assert entity_type is not None or not any(char.isalnum() for char in re.sub(r"\([^)]*\)", "", text))
    assert warn == (entity_type == "other")


@FAST
@given(any_text)
def test_abn_digits_are_ascii_digits_and_checking_them_never_raises(text: str) -> None:
    digits = abn_digits(text)

    assert digits is None or (digits.isascii() and digits.isdigit())
    assert is_valid_abn(text) in (True, False)
