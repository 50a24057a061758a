"""What the simulated XPM holds: practices, their staff and clients, as XML element values.

Values are kept the way XPM would serialise them (strings, ``Yes``/``No`` flags, multi-line
addresses with real newlines), so the sync's reader is exercised against realistic text. A key that
is absent from ``SimClient.elements`` is an element XPM omits; an empty string is an element XPM
sends empty (``<Fax />``).

Switches for what a practice's life brings (SPEC A2-A4): prospects (``add_prospect``), a client
archived or deleted and typed in again with the same code (``recreate_client``), a record sent
without its UUID (``drop_uuid``), one UUID several times in one answer (``repeat_client``), a staff
member who left (``remove_staff``), and a ``<WebUrl>`` in each listed client (``list_web_urls``).
A huge element needs no switch: ``update_client(uuid, Name="N" * 450_000)``.
"""

from __future__ import annotations

import copy
import uuid as uuidlib
import zlib
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
    # Switch: XPM sends this record without its <UUID> element (the simulator still knows it by
    # ``uuid``, so tests can change it; ``client.api/get`` still finds it).
    without_uuid: bool = False

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

    @property
    def is_prospect(self) -> bool:
        return self.elements.get("IsProspect") == "Yes"

    @property
    def web_id(self) -> int:
        """XPM's own number for the client, as in its page's address (``/Client/<id>/Detail``)."""
        return zlib.crc32(self.uuid.encode("utf-8")) % 10_000_000


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
    # Switch: each <Client> of client.api/list carries a <WebUrl> (XPM documents one only on
    # client.api/get, beside the <Client>: see ``web_url``).
    list_web_urls: bool = False

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
            _set_element(client, key, value)
        client.modified_at = self.clock()
        return client

    def archive_client(self, uuid: str) -> SimClient:
        return self.update_client(uuid, IsArchived="Yes")

    def delete_client(self, uuid: str) -> SimClient:
        # XPM keeps deleted clients in the list flagged IsDeleted, which is how the sync learns of them.
        return self.update_client(uuid, IsDeleted="Yes")

    def _new_uuid(self, seed: str) -> str:
        """A UUID no client of the practice has, the same for the same practice and ``seed``."""
        taken = {client.uuid for client in self.clients}
        number = 0
        while (candidate := str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{seed}:{number}"))) in taken:
            number += 1
        return candidate

    def web_url(self, client: SimClient) -> str:
        """The client's page in XPM, as client.api/get gives it (``<WebUrl>``)."""
        return f"https://practicemanager.xero.com/Client/{client.web_id}/Detail"

    def add_prospect(
        self, name: str, *, code: str | None = None, partner_uuid: str | None = None, **elements: str
    ) -> SimClient:
        """A prospect (``IsProspect`` Yes), as practices keep them: usually no code and no partner
        yet. ``update_client(uuid, IsProspect=False, ClientCode=..., AccountManager=...)`` turns
        it into a client, as XPM does."""
        values = {"Name": name, "IsProspect": "Yes", "IsArchived": "No", "IsDeleted": "No", **elements}
        if code is not None:
            values["ClientCode"] = code
        prospect = SimClient(
            uuid=self._new_uuid(f"prospect:{self.tenant_id}:{name}"),
            elements=values,
            account_manager_uuid=partner_uuid,
        )
        self.add_client(prospect)
        return prospect

    def recreate_client(self, uuid: str, *, deleted: bool = False) -> SimClient:
        """What a practice does when it archives (or, ``deleted``, deletes) a client and types it in
        again: the old record stays in the list flagged, and a new one with a new UUID and the same
        code, name and details is added at the end. Returns the new client."""
        old = self.delete_client(uuid) if deleted else self.archive_client(uuid)
        elements = {**old.elements, "IsArchived": "No", "IsDeleted": "No"}
        fresh = SimClient(
            uuid=self._new_uuid(f"recreated:{uuid}"),
            elements=elements,
            contacts=copy.deepcopy(old.contacts),
            groups=list(old.groups),
            account_manager_uuid=old.account_manager_uuid,
            job_manager_uuid=old.job_manager_uuid,
        )
        self.add_client(fresh)
        return fresh

    def repeat_client(self, uuid: str, copies: int = 1, **elements: Any) -> list[SimClient]:
        """XPM answering one client several times in one list (SPEC A4): ``copies`` more records
        with the same UUID at the end of the list, each with ``elements`` changed as
        ``update_client`` would. ``client(uuid)`` and ``client.api/get`` still give the first."""
        original = self.client(uuid)
        added: list[SimClient] = []
        for _ in range(copies):
            repeat = copy.deepcopy(original)
            repeat.modified_at = self.clock()
            self.clients.append(repeat)
            added.append(repeat)
            for key, value in elements.items():
                _set_element(repeat, key, value)
        return added

    def drop_uuid(self, uuid: str, dropped: bool = True) -> SimClient:
        """Switch: XPM sends this client without its <UUID> (or, ``dropped=False``, with it again)."""
        client = self.client(uuid)
        client.without_uuid = dropped
        client.modified_at = self.clock()
        return client

    def remove_staff(self, uuid: str) -> SimStaff:
        """A staff member who left the practice: no longer in staff.api/list."""
        member = self.staff_member(uuid)
        self.staff.remove(member)
        return member

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


def _set_element(client: SimClient, key: str, value: Any) -> None:
    """One element of ``Practice.update_client``."""
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
