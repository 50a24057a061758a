"""Streaming, hardened reader for XPM v3.1 XML answers (SPEC A8).

Large practices answer ``client.api/list`` with tens of MB, so the document is never held whole:
bytes are fed to an expat parser as they arrive, and only the record being read (one ``Staff`` or
``Client``) exists as an element tree at any time. Each record is handed out as soon as its end
tag is seen and then dropped.

The parser is defusedxml's with DTDs forbidden: XPM never sends one, so any DTD, entity
declaration or external reference is hostile (XXE, billion laughs) and refused before anything is
expanded.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar
from xml.etree.ElementTree import Element, ParseError, TreeBuilder

from defusedxml.common import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from xpm_sync.adapters.xpm.errors import XpmBadResponse
from xpm_sync.domain.entries import without_credentials
from xpm_sync.domain.xpm_records import XpmClientRecord, XpmContact, XpmGroup, XpmStaff

# Where records sit in each answer. ``client.api/get`` wraps its one client directly in Response.
STAFF_PATH = ("Response", "StaffList", "Staff")
CLIENTS_PATH = ("Response", "Clients", "Client")
CLIENT_PATH = ("Response", "Client")

# No value the sync uses comes near 1 MB. Inside a record, a text node past this is cut off where
# it passes it and its element flagged (``OVERSIZED``): the record alone fails if the sync uses that
# element, and a long note it never reads costs nothing. Outside a record it is a broken or hostile
# answer. Either way memory stays bounded while the rest of the document streams in.
MAX_TEXT_CHARS = 1_000_000
# Set by the reader on an element whose text passed MAX_TEXT_CHARS (XPM's own attributes are dropped).
OVERSIZED = "oversized"
# 50,000 detailed clients are roughly 100-150 MB of XML; anything far past that is not an answer.
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024
# XPM nests a handful of levels; deep nesting only serves to exhaust the stack.
MAX_DEPTH = 64
# XPM's UUIDs are 36 characters; this leaves room for any identifier a record could carry.
MAX_UUID_BYTES = 256
# A single huge chunk would otherwise be parsed in one go, queueing every record it contains
# before the first is handed out.
_FEED_SLICE = 64 * 1024
_DESCRIPTION_LIMIT = 300

_T = TypeVar("_T")


class XpmStatusError(XpmBadResponse):
    """``<Status>ERROR</Status>``: XPM understood the call and refused it (often with HTTP 200)."""

    def __init__(self, description: str | None) -> None:
        super().__init__(f"XPM answered ERROR: {description or 'no description'}")
        self.description = description


class XpmTruncatedResponse(XpmBadResponse):
    """The document ended before it was complete: worth one retry, unlike a malformed answer."""


def _local(tag: str) -> str:
    # XPM does not use namespaces; tolerate them rather than silently missing every record.
    return tag.rpartition("}")[2]


def sanitise(text: str | None, limit: int = _DESCRIPTION_LIMIT) -> str | None:
    """Make server-supplied text safe to put in an exception, a run's log or a log line: one line,
    bounded, and nothing shaped like a credential (a gateway echoing the request's bearer token)."""
    if text is None:
        return None
    cleaned = re.sub(r"[\x00-\x1f\x7f]+", " ", without_credentials(text))
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 3] + "..."
    return cleaned or None


class _Target:
    """Expat target that keeps only the current record as elements; everything else is counted."""

    def __init__(self, record_path: tuple[str, ...], max_text_chars: int) -> None:
        self._record_path = record_path
        self._record_depth = len(record_path)
        self._max_text_chars = max_text_chars
        self._path: list[str] = []
        self._builder: TreeBuilder | None = None
        self._open: list[Element] = []
        self._text_chars = 0
        self._header_text: list[str] = []
        self.records: deque[Element] = deque()
        self.root: str | None = None
        self.status: str | None = None
        self.error_description: str | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        name = _local(tag)
        self._path.append(name)
        self._text_chars = 0
        self._header_text = []
        depth = len(self._path)
        if depth > MAX_DEPTH:
            raise XpmBadResponse("XPM answer is nested too deeply")
        if depth == 1:
            self.root = name
            if name != "Response":
                raise XpmBadResponse(f"XPM answer is not a <Response> (got <{sanitise(name, 40)}>)")
        if self._builder is None and depth == self._record_depth and tuple(self._path) == self._record_path:
            self._builder = TreeBuilder()
        if self._builder is not None:
            # Attributes are never used by XPM records; dropping them keeps hostile ones out of memory.
            self._open.append(self._builder.start(name, {}))

    def data(self, text: str) -> None:
        already = self._text_chars
        self._text_chars += len(text)
        if self._text_chars > self._max_text_chars:
            if self._builder is None or not self._open:
                raise XpmBadResponse(f"XPM answer has an element over {self._max_text_chars} characters")
            if already <= self._max_text_chars:
                self._open[-1].set(OVERSIZED, "1")
                self._builder.data(text[: self._max_text_chars - already])
            return
        if self._builder is not None:
            self._builder.data(text)
        elif len(self._path) == 2:
            self._header_text.append(text)

    def end(self, tag: str) -> None:
        depth = len(self._path)
        name = self._path.pop()
        self._text_chars = 0
        if self._builder is not None:
            self._builder.end(name)
            self._open.pop()
            if depth == self._record_depth:
                self.records.append(self._builder.close())
                self._builder = None
            return
        if depth == 2:
            text = "".join(self._header_text)
            self._header_text = []
            if name == "Status":
                self.status = text.strip().upper()
            elif name == "ErrorDescription":
                self.error_description = sanitise(text)

    def check_status(self) -> None:
        if self.status == "ERROR":
            raise XpmStatusError(self.error_description)

    def close(self) -> None:
        return None


def iter_elements(
    chunks: Iterable[bytes],
    record_path: tuple[str, ...],
    *,
    max_text_chars: int = MAX_TEXT_CHARS,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> Iterator[Element]:
    """Yield each record element at ``record_path`` as soon as it is complete.

    The element is only valid until the next one is requested: callers parse it into a model
    straight away (``iter_records`` does). Raises ``XpmStatusError`` for ``<Status>ERROR``,
    ``XpmTruncatedResponse`` for a document cut short and ``XpmBadResponse`` for anything else
    unusable. A document without ``<Status>OK</Status>`` is unusable, since XPM always sends it.
    """
    target = _Target(record_path, max_text_chars)
    parser = DefusedXMLParser(target=target, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    received = 0

    def feed(data: bytes) -> None:
        try:
            parser.feed(data)
        except (ParseError, DefusedXmlException) as exc:
            raise XpmBadResponse(f"XPM answer is not usable XML: {_describe(exc)}") from None

    for chunk in chunks:
        received += len(chunk)
        if received > max_document_bytes:
            raise XpmBadResponse(f"XPM answer is larger than {max_document_bytes} bytes")
        for start in range(0, len(chunk), _FEED_SLICE):
            feed(chunk[start : start + _FEED_SLICE])
            # Status precedes the records in every XPM answer. Once it says ERROR nothing more is
            # handed out; the (small) rest is still read so the ErrorDescription after it is known.
            if target.status != "ERROR":
                while target.records:
                    yield target.records.popleft()
    try:
        parser.close()
    except (ParseError, DefusedXmlException) as exc:
        if received == 0:
            raise XpmTruncatedResponse("XPM answer was empty") from None
        if isinstance(exc, ParseError) and _is_truncation(exc):
            raise XpmTruncatedResponse(f"XPM answer was cut short: {_describe(exc)}") from None
        raise XpmBadResponse(f"XPM answer is not usable XML: {_describe(exc)}") from None
    target.check_status()
    while target.records:
        yield target.records.popleft()
    if target.status != "OK":
        raise XpmBadResponse("XPM answer has no <Status>OK</Status>")


def _is_truncation(exc: ParseError) -> bool:
    # Expat reports a document that simply stops as one of these at end of input.
    return any(text in str(exc) for text in ("no element found", "unclosed token", "unclosed CDATA"))


def _describe(exc: Exception) -> str:
    return sanitise(str(exc), 120) or type(exc).__name__


def iter_records(
    chunks: Iterable[bytes],
    record_path: tuple[str, ...],
    parse: Callable[[Element], _T],
    *,
    max_text_chars: int = MAX_TEXT_CHARS,
    max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> Iterator[_T]:
    """Parse each record as it completes, so no raw element outlives its turn."""
    for element in iter_elements(
        chunks, record_path, max_text_chars=max_text_chars, max_document_bytes=max_document_bytes
    ):
        record = parse(element)
        element.clear()
        yield record


def iter_staff(chunks: Iterable[bytes], **limits: int) -> Iterator[XpmStaff]:
    """``staff.api/list``: ``<Response><StaffList><Staff>...``."""
    return iter_records(chunks, STAFF_PATH, parse_staff, **limits)


def iter_clients(chunks: Iterable[bytes], **limits: int) -> Iterator[XpmClientRecord]:
    """``client.api/list``: ``<Response><Clients><Client>...``."""
    return iter_records(chunks, CLIENTS_PATH, parse_client, **limits)


# --- normalisation (SPEC A3: trimmed strings, empty is absent, Yes/No are booleans) -----------

_TRUE = frozenset({"yes", "true", "y", "1"})
_FALSE = frozenset({"no", "false", "n", "0"})


def _children(elem: Element) -> dict[str, Element]:
    # XPM repeats some elements: a detailed client carries FirstName, LastName and DateOfBirth in
    # its general block and again in the Practice Manager block, often one copy empty (Xero's own
    # client.api/get example sends DateOfBirth filled, then empty). An empty element is an absent
    # value (SPEC A3), so the first copy that holds something wins; of two that hold something,
    # the first.
    found: dict[str, Element] = {}
    for child in elem:
        held = found.get(child.tag)
        if held is None or (_is_blank(held) and not _is_blank(child)):
            found[child.tag] = child
    return found


def _is_blank(elem: Element) -> bool:
    return len(elem) == 0 and not is_oversized(elem) and not (elem.text or "").strip()


def is_oversized(elem: Element | None) -> bool:
    return elem is not None and elem.get(OVERSIZED) is not None


def text_of(elem: Element | None) -> str | None:
    """The element's text, trimmed; None when empty, or cut off for being oversized (unusable)."""
    if elem is None or elem.text is None or is_oversized(elem):
        return None
    value = elem.text.strip()
    return value or None


def flag_of(elem: Element | None, default: bool = False) -> bool:
    value = text_of(elem)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return default


def staff_ref_of(elem: Element | None) -> str | None:
    """A staff link: ``<AccountManager><UUID>..</UUID><Name>..</Name></AccountManager>``.

    Older answers carry an ``ID`` child or the identifier as plain text; both are accepted. A link
    that carries something (a Name) but no identifier is set, yet can match no staff member: it is
    handed on as what it carries, so the sync reports a Partner it cannot resolve instead of taking
    the default partner (SPEC A2). A link with nothing in it is unset.
    """
    if elem is None:
        return None
    children = _children(elem)
    for key in ("UUID", "ID"):
        value = text_of(children.get(key))
        if value is not None:
            return value
    if not children:
        return text_of(elem)
    named = text_of(children.get("Name"))
    return named if named is not None else next((v for c in children.values() if (v := text_of(c))), None)


def _uuid(fields: dict[str, Element]) -> str:
    # A record without a UUID is handed on as such ("" ): the sync reports it, alone (SPEC A4).
    # So is one whose UUID is too long to be one: it would key the record's state and index
    # entries, which DynamoDB refuses past 1,024 bytes, and take the whole run down with it.
    value = text_of(fields.get("UUID")) or ""
    return value if len(value.encode("utf-8")) <= MAX_UUID_BYTES else ""


# The elements the sync maps (SPEC A3, A4): a value cut off in any other fails nothing.
_STAFF_FIELDS = ("UUID", "Name", "Email")
_CLIENT_FIELDS = (
    "UUID", "Name", "Title", "FirstName", "LastName", "Email", "Phone", "Fax", "ClientCode",
    "Address", "City", "Region", "PostCode", "PostalAddress", "PostalCity", "PostalRegion",
    "PostalPostCode", "BusinessNumber", "BusinessStructure", "IsArchived", "IsDeleted", "IsProspect",
    "WebUrl",
)  # fmt: skip
_STAFF_LINK_FIELDS = ("UUID", "ID", "Name")
_CONTACT_FIELDS = ("UUID", "Name", "Salutation", "IsPrimary", "IsDeleted")


def _uses_oversized(element: Element | None, used: Iterable[str], *, itself: bool = False) -> bool:
    """Whether a value the sync reads of ``element`` (its ``used`` children, and with ``itself``
    its own text) was cut off."""
    if element is None:
        return False
    fields = _children(element)
    return (itself and is_oversized(element)) or any(is_oversized(fields.get(tag)) for tag in used)


def _first_group_oversized(groups: Iterable[Element]) -> bool:
    """The client's group is the first group with a name (SPEC A3): whether that name was cut off."""
    for group in groups:
        name = _children(group).get("Name")
        if is_oversized(name):
            return True
        if text_of(name) is not None:
            return False
    return False


def parse_staff(elem: Element) -> XpmStaff:
    fields = _children(elem)
    return XpmStaff(
        uuid=_uuid(fields),
        name=text_of(fields.get("Name")),
        email=text_of(fields.get("Email")),
        phone=text_of(fields.get("Phone")),
        mobile=text_of(fields.get("Mobile")),
        oversized=_uses_oversized(elem, _STAFF_FIELDS),
    )


def _parse_contact(elem: Element) -> XpmContact:
    fields = _children(elem)
    return XpmContact(
        uuid=text_of(fields.get("UUID")),
        name=text_of(fields.get("Name")),
        salutation=text_of(fields.get("Salutation")),
        is_primary=flag_of(fields.get("IsPrimary")),
        is_deleted=flag_of(fields.get("IsDeleted")),
    )


def _parse_group(elem: Element) -> XpmGroup:
    fields = _children(elem)
    return XpmGroup(uuid=text_of(fields.get("UUID")), name=text_of(fields.get("Name")))


def parse_client(elem: Element) -> XpmClientRecord:
    fields = _children(elem)

    def text(tag: str) -> str | None:
        return text_of(fields.get(tag))

    contacts = fields.get("Contacts")
    groups = fields.get("Groups")
    contact_elems = [] if contacts is None else [c for c in contacts if c.tag == "Contact"]
    group_elems = [] if groups is None else [g for g in groups if g.tag == "Group"]
    staff_links = [link for tag in ("AccountManager", "JobManager") if (link := fields.get(tag)) is not None]
    return XpmClientRecord(
        uuid=_uuid(fields),
        name=text("Name"),
        title=text("Title"),
        first_name=text("FirstName"),
        last_name=text("LastName"),
        email=text("Email"),
        phone=text("Phone"),
        fax=text("Fax"),
        client_code=text("ClientCode"),
        # Inner line breaks survive strip(): the mapping splits addresses into lines (SPEC A3).
        address=text("Address"),
        city=text("City"),
        region=text("Region"),
        post_code=text("PostCode"),
        postal_address=text("PostalAddress"),
        postal_city=text("PostalCity"),
        postal_region=text("PostalRegion"),
        postal_post_code=text("PostalPostCode"),
        business_number=text("BusinessNumber"),
        business_structure=text("BusinessStructure"),
        account_manager_uuid=staff_ref_of(fields.get("AccountManager")),
        job_manager_uuid=staff_ref_of(fields.get("JobManager")),
        is_archived=flag_of(fields.get("IsArchived")),
        is_deleted=flag_of(fields.get("IsDeleted")),
        is_prospect=flag_of(fields.get("IsProspect")),
        contacts=tuple(_parse_contact(c) for c in contact_elems),
        groups=tuple(_parse_group(g) for g in group_elems),
        web_url=text("WebUrl"),
        oversized=_uses_oversized(elem, _CLIENT_FIELDS)
        or any(_uses_oversized(link, _STAFF_LINK_FIELDS, itself=True) for link in staff_links)
        or any(_uses_oversized(contact, _CONTACT_FIELDS) for contact in contact_elems)
        or _first_group_oversized(group_elems),
    )
