"""XPM v3.1 XML, written as a stream of string pieces so a 50,000-client list never sits in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from xml.sax.saxutils import escape

from local.xpm_sim.model import STAFF_ELEMENTS, SimClient, SimContact, SimStaff

# The documented order of a v3.1 <Client>; the nested ones are rendered from dedicated attributes.
CLIENT_ORDER: tuple[str, ...] = (
    "Name",
    "Title",
    "Gender",
    "FirstName",
    "LastName",
    "OtherName",
    "Email",
    "DateOfBirth",
    "Address",
    "City",
    "Region",
    "PostCode",
    "Country",
    "PostalAddress",
    "PostalCity",
    "PostalRegion",
    "PostalPostCode",
    "PostalCountry",
    "Phone",
    "Fax",
    "Website",
    "ReferralSource",
    "ExportCode",
    "IsProspect",
    "IsArchived",
    "IsDeleted",
    "AccountManager",
    "JobManager",
    "Type",
    "Contacts",
    "Groups",
    "Notes",
    "BusinessStructure",
    "BalanceMonth",
    "ClientCode",
    "BusinessNumber",
    "CompanyNumber",
    "TaxNumber",
    "GSTRegistered",
    "GSTPeriod",
    "PrepareGST",
)
_KNOWN = frozenset(CLIENT_ORDER)

# Without detailed=true XPM answers a lighter client: no personal names, contacts, groups or
# business details — the documented order up to <Type>, less the person's own elements.
_PERSONAL_ELEMENTS = frozenset({"Title", "Gender", "FirstName", "LastName", "OtherName", "DateOfBirth"})
BASIC_ELEMENTS = frozenset(CLIENT_ORDER[: CLIENT_ORDER.index("Type") + 1]) - _PERSONAL_ELEMENTS


def element(name: str, value: str | None) -> str:
    if value is None:
        return ""
    if value == "":
        return f"<{name} />"
    return f"<{name}>{escape(value)}</{name}>"


def _staff_ref(name: str, uuid: str | None, staff_names: dict[str, str | None]) -> str:
    if uuid is None:
        return ""
    return f"<{name}><UUID>{escape(uuid)}</UUID>{element('Name', staff_names.get(uuid) or '')}</{name}>"


def _type(value: str) -> str:
    # XPM's client Type is a billing profile; rendered nested so readers meet a foreign <Name>.
    return (
        f"<Type><Name>{escape(value)}</Name><CostMarkup>0.00</CostMarkup>"
        "<PaymentTerm>DayOfMonth</PaymentTerm><PaymentDay>20</PaymentDay></Type>"
    )


def _contact(contact: SimContact) -> str:
    parts = [
        "<Contact>",
        element("UUID", contact.uuid),
        element("IsPrimary", "Yes" if contact.is_primary else "No"),
        element("Name", contact.name),
        element("Salutation", contact.salutation),
        element("Addressee", contact.addressee),
        element("Mobile", contact.mobile),
        element("Email", contact.email),
        element("Phone", contact.phone),
        element("Position", contact.position),
    ]
    if contact.is_deleted:
        parts.append("<IsDeleted>Yes</IsDeleted>")
    parts.append("</Contact>")
    return "".join(parts)


def client_xml(
    client: SimClient,
    staff_names: dict[str, str | None],
    *,
    detailed: bool = True,
    web_url: str | None = None,
) -> str:
    """One <Client>; without its <UUID> when the client is switched so (``without_uuid``), with a
    <WebUrl> when one is given (``Practice.list_web_urls``: XPM documents none inside a client)."""
    parts = ["<Client>", "" if client.without_uuid else element("UUID", client.uuid)]
    for name in CLIENT_ORDER:
        if not detailed and name not in BASIC_ELEMENTS:
            continue
        if name == "AccountManager":
            parts.append(_staff_ref(name, client.account_manager_uuid, staff_names))
        elif name == "JobManager":
            parts.append(_staff_ref(name, client.job_manager_uuid, staff_names))
        elif name == "Contacts":
            parts.append("<Contacts>" + "".join(_contact(c) for c in client.contacts) + "</Contacts>")
        elif name == "Groups":
            groups = "".join(
                f"<Group>{element('UUID', g.uuid)}{element('Name', g.name)}</Group>" for g in client.groups
            )
            parts.append(f"<Groups>{groups}</Groups>")
        elif name == "Type":
            value = client.elements.get("Type")
            if value is not None:
                parts.append(_type(value))
        else:
            parts.append(element(name, client.elements.get(name)))
    if web_url is not None:
        parts.append(element("WebUrl", web_url))
    if detailed:
        # Elements XPM may add later: readers must skip what they do not know.
        for name, value in client.elements.items():
            if name not in _KNOWN:
                parts.append(element(name, value))
    parts.append("</Client>")
    return "".join(parts)


def staff_xml(member: SimStaff) -> str:
    parts = ["<Staff>", element("UUID", member.uuid)]
    parts.extend(element(name, getattr(member, attribute)) for name, attribute in STAFF_ELEMENTS.items())
    parts.append("</Staff>")
    return "".join(parts)


def status_ok_open(method: str) -> str:
    return f'<Response api-method="{method}"><Status>OK</Status>'


def client_list(
    clients: Iterable[SimClient],
    staff_names: dict[str, str | None],
    *,
    detailed: bool,
    web_url: Callable[[SimClient], str] | None = None,
) -> Iterator[str]:
    yield status_ok_open("List") + "<Clients>"
    for client in clients:
        yield client_xml(
            client, staff_names, detailed=detailed, web_url=web_url(client) if web_url is not None else None
        )
    yield "</Clients></Response>"


def staff_list(staff: Iterable[SimStaff]) -> Iterator[str]:
    yield status_ok_open("List") + "<StaffList>"
    for member in staff:
        yield staff_xml(member)
    yield "</StaffList></Response>"


def client_get(client: SimClient, staff_names: dict[str, str | None], web_url: str | None = None) -> str:
    """As documented for v3.1: the client's page in XPM beside the <Client>, not inside it."""
    return (
        status_ok_open("Get") + element("WebUrl", web_url) + client_xml(client, staff_names) + "</Response>"
    )


def status_error(method: str, description: str) -> str:
    return (
        f'<Response api-method="{method}"><Status>ERROR</Status>'
        f"<ErrorDescription>{escape(description)}</ErrorDescription></Response>"
    )
