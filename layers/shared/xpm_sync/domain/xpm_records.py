"""XPM records as the v3.1 XML API returns them (SPEC A8), reduced to what SPEC A3 needs.

Values are already normalised by the XML reader: strings trimmed, empty elements as ``None``,
``Yes``/``No`` flags as booleans. Nothing here knows about Active. A record XPM sent without a
UUID has ``uuid == ""``: the sync reports it and goes on with the others (SPEC A4).

A client record is also the copy the sync keeps of a record that failed, to retry it from
(SPEC A7): ``model_dump_json`` / ``model_validate_json`` round-trip it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# A value the sync uses was too long to read (the XML reader cut it off): the record fails alone
# (RECORD_TOO_LARGE). Never part of a kept copy, since such a record is not retried.
Oversized = Field(default=False, exclude=True)


class XpmModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class XpmStaff(XpmModel):
    uuid: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    mobile: str | None = None
    oversized: bool = Oversized


class XpmContact(XpmModel):
    uuid: str | None = None
    name: str | None = None
    salutation: str | None = None
    is_primary: bool = False
    is_deleted: bool = False


class XpmGroup(XpmModel):
    uuid: str | None = None
    name: str | None = None


class XpmClientRecord(XpmModel):
    uuid: str
    name: str | None = None
    title: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    fax: str | None = None
    client_code: str | None = None
    address: str | None = None
    city: str | None = None
    region: str | None = None
    post_code: str | None = None
    postal_address: str | None = None
    postal_city: str | None = None
    postal_region: str | None = None
    postal_post_code: str | None = None
    business_number: str | None = None
    business_structure: str | None = None
    # Staff UUIDs: AccountManager is what XPM's screens call the client's "Partner".
    account_manager_uuid: str | None = None
    job_manager_uuid: str | None = None
    is_archived: bool = False
    is_deleted: bool = False
    is_prospect: bool = False
    contacts: tuple[XpmContact, ...] = ()
    groups: tuple[XpmGroup, ...] = ()
    # XPM's page for the client, when the answer carries one: Sync Monitoring links to it.
    web_url: str | None = None
    oversized: bool = Oversized
