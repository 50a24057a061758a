"""What the simulated XPM holds: practices, their staff and clients, as XML element values.

Values are kept the way XPM would serialise them (strings, ``Yes``/``No`` flags, multi-line
addresses with real newlines), so the sync's reader is exercised against realistic text. A key that
is absent from ``SimClient.elements`` is an element XPM omits; an empty string is an element XPM
sends empty (``<Fax />``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Staff element name -> SimStaff attribute; also the order of the elements in <Staff>.
STAFF_ELEMENTS: dict[str, str] = {
    "Name": "name",
    "Email": "email",
    "Phone": "phone",
    "Mobile": "mobile",
    "Address": "address",
    "PayrollCode": "payroll_code",
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class SimStaff:
    uuid: str
    name: str | None
    email: str | None = None
    phone: str | None = None
    mobile: str | None = None
    address: str | None = None
    payroll_code: str | None = None
    # XPM's staff list does not say who is a partner; the generator needs to know whom to assign.
    is_partner: bool = False
    modified_at: datetime = field(default_factory=_utcnow)


@dataclass
class SimContact:
    uuid: str
    name: str
    is_primary: bool = False
    salutation: str | None = None
    addressee: str | None = None
    mobile: str | None = None
    email: str | None = None
    phone: str | None = None
    position: str | None = None
    is_deleted: bool = False


@dataclass
class SimGroup:
    uuid: str
    name: str


@dataclass
class SimClient:
    uuid: str
    # XPM element name -> text, for the flat elements (Name, ClientCode, IsArchived, ...).
    elements: dict[str, str] = field(default_factory=dict)
    contacts: list[SimContact] = field(default_factory=list)
    groups: list[SimGroup] = field(default_factory=list)
    account_manager_uuid: str | None = None
    job_manager_uuid: str | None = None
    modified_at: datetime = field(default_factory=_utcnow)

    @property
    def name(self) -> str | None:
        return self.elements.get("Name")

    @property
    def code(self) -> str | None:
        return self.elements.get("ClientCode")

    @property
    def is_archived(self) -> bool:
        return self.elements.get("IsArchived") == "Yes"

    @property
    def is_deleted(self) -> bool:
        return self.elements.get("IsDeleted") == "Yes"


def flag(value: bool) -> str:
    return "Yes" if value else "No"


@dataclass
class Practice:
    tenant_id: str
    tenant_name: str | None
    staff: list[SimStaff] = field(default_factory=list)
    clients: list[SimClient] = field(default_factory=list)
    # Data problems the generator planted, kind -> uuids, so tests and the demo know what to expect.
    problems: dict[str, list[str]] = field(default_factory=dict)
    # Partner staff the demo must not create as Active users (their clients hit PARTNER_NOT_IN_ACTIVE).
    partners_without_active_user: list[str] = field(default_factory=list)
    # The simulator swaps in its own clock on add_practice so that advance_time moves modified times.
    clock: Callable[[], datetime] = field(default=_utcnow, repr=False, compare=False)

    def partner_staff(self) -> list[SimStaff]:
        return [s for s in self.staff if s.is_partner]

    def staff_member(self, uuid: str) -> SimStaff:
        for member in self.staff:
            if member.uuid == uuid:
                return member
        raise KeyError(f"no staff {uuid} in practice {self.tenant_id}")

    def client(self, uuid: str) -> SimClient:
        for client in self.clients:
            if client.uuid == uuid:
                return client
        raise KeyError(f"no client {uuid} in practice {self.tenant_id}")

    def find_client(self, uuid: str) -> SimClient | None:
        try:
            return self.client(uuid)
        except KeyError:
            return None

    def add_client(self, client: SimClient) -> None:
        client.modified_at = self.clock()
        self.clients.append(client)

    def update_client(self, uuid: str, **elements: Any) -> SimClient:
        """Set XPM elements on a client; ``None`` removes an element, a bool becomes Yes/No.

        ``AccountManager``/``JobManager`` take a staff uuid (or None), ``Contacts``/``Groups`` lists
        of SimContact/SimGroup; every other key is a flat element such as ``Name`` or ``ClientCode``.
        """
        client = self.client(uuid)
        for key, value in elements.items():
            if key == "UUID":
                raise ValueError("a client's UUID never changes in XPM")
            if key == "AccountManager":
                client.account_manager_uuid = value
            elif key == "JobManager":
                client.job_manager_uuid = value
            elif key == "Contacts":
                client.contacts = list(value)
            elif key == "Groups":
                client.groups = list(value)
            elif value is None:
                client.elements.pop(key, None)
            elif isinstance(value, bool):
                client.elements[key] = flag(value)
            else:
                client.elements[key] = str(value)
        client.modified_at = self.clock()
        return client

    def archive_client(self, uuid: str) -> SimClient:
        return self.update_client(uuid, IsArchived="Yes")

    def delete_client(self, uuid: str) -> SimClient:
        # XPM keeps deleted clients in the list flagged IsDeleted, which is how the sync learns of them.
        return self.update_client(uuid, IsDeleted="Yes")

    def add_staff(self, staff: SimStaff) -> None:
        staff.modified_at = self.clock()
        self.staff.append(staff)

    def update_staff(self, uuid: str, **elements: str | None) -> SimStaff:
        """Set staff elements by XPM name (``Name``, ``Email``, ...); ``None`` omits the element."""
        member = self.staff_member(uuid)
        for key, value in elements.items():
            attribute = STAFF_ELEMENTS.get(key)
            if attribute is None:
                raise KeyError(f"unknown staff element {key!r}")
            setattr(member, attribute, value)
        member.modified_at = self.clock()
        return member
