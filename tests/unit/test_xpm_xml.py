"""The streaming XML reader: XPM's answers as raw bytes in, normalised records out (SPEC A3, A8)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest
from xpm_sync.adapters.xpm import xml
from xpm_sync.adapters.xpm.errors import XpmBadResponse

STAFF = b"""<?xml version="1.0" encoding="utf-8"?>
<Response api-method="List">
  <Status>OK</Status>
  <StaffList>
    <Staff><UUID>s-1</UUID><Name> Mary Jane Smith </Name><Email>mary@example.com</Email>
      <Phone>02 9999 0000</Phone><Mobile /><Address>1 Main St</Address></Staff>
  </StaffList>
</Response>"""

CLIENT_BODY = """<Client>
  <UUID>c-1</UUID>
  <Name>  Acme Pty Ltd  </Name>
  <Title />
  <FirstName></FirstName>
  <Email>   </Email>
  <Address>
     Level 3
     100 George Street

     Rear entrance
  </Address>
  <City>Sydney</City>
  <PostalAddress>PO Box 1
Haymarket</PostalAddress>
  <IsProspect>No</IsProspect>
  <IsArchived>yes</IsArchived>
  <IsDeleted>FALSE</IsDeleted>
  <AccountManager><UUID>staff-partner</UUID><Name>Pat Partner</Name></AccountManager>
  <JobManager><ID>staff-manager</ID><Name>Max Manager</Name></JobManager>
  <Type><Name>Billing profile</Name><CostMarkup>0.00</CostMarkup></Type>
  <Contacts>
    <Contact><UUID>k-1</UUID><IsPrimary>No</IsPrimary><Name>First</Name><Salutation>Bob</Salutation></Contact>
    <Contact><UUID>k-2</UUID><IsPrimary>Yes</IsPrimary><Name>Second</Name><Salutation>Ann</Salutation>
      <IsDeleted>Yes</IsDeleted></Contact>
  </Contacts>
  <Groups>
    <Group><UUID>g-9</UUID><Name>Zeta</Name></Group>
    <Group><UUID>g-1</UUID><Name>Alpha</Name></Group>
  </Groups>
  <BusinessStructure>Company</BusinessStructure>
  <ClientCode>ACME01</ClientCode>
  <BusinessNumber>51 824 753 556</BusinessNumber>
  <SomethingXpmAddsLater><Deep><Deeper>x</Deeper></Deep></SomethingXpmAddsLater>
</Client>"""


def clients_doc(*bodies: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><Response api-method="List"><Status>OK</Status><Clients>'
        + "".join(bodies)
        + "</Clients></Response>"
    ).encode()


def one_client(**elements: str) -> str:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in elements.items())
    return f"<Client>{inner}</Client>"


def test_staff_list_of_one_is_a_list():
    staff = list(xml.iter_staff([STAFF]))
    assert len(staff) == 1
    assert staff[0].uuid == "s-1"
    assert staff[0].name == "Mary Jane Smith"
    assert staff[0].email == "mary@example.com"
    assert staff[0].phone == "02 9999 0000"
    assert staff[0].mobile is None


def test_client_list_of_one_is_a_list():
    clients = list(xml.iter_clients([clients_doc(CLIENT_BODY)]))
    assert [c.uuid for c in clients] == ["c-1"]


def test_client_fields_are_normalised():
    (client,) = xml.iter_clients([clients_doc(CLIENT_BODY)])
    assert client.name == "Acme Pty Ltd"
    assert client.title is None
    assert client.first_name is None
    assert client.email is None
    assert client.city == "Sydney"
    assert client.client_code == "ACME01"
    assert client.business_number == "51 824 753 556"
    assert client.business_structure == "Company"
    assert client.is_prospect is False
    assert client.is_archived is True
    assert client.is_deleted is False


def test_multi_line_addresses_keep_their_inner_lines():
    (client,) = xml.iter_clients([clients_doc(CLIENT_BODY)])
    assert client.address is not None
    assert client.address.startswith("Level 3\n")
    assert client.address.endswith("Rear entrance")
    assert [line.strip() for line in client.address.splitlines()] == [
        "Level 3",
        "100 George Street",
        "",
        "Rear entrance",
    ]
    assert client.postal_address == "PO Box 1\nHaymarket"


def test_crlf_addresses_come_out_as_plain_newlines():
    doc = clients_doc(one_client(UUID="c", Address="1 A St\r\nSuburb")).replace(b"&#13;", b"")
    (client,) = xml.iter_clients([doc])
    assert client.address == "1 A St\nSuburb"


def test_staff_links_take_the_uuid_child_then_id_then_plain_text():
    (client,) = xml.iter_clients([clients_doc(CLIENT_BODY)])
    assert client.account_manager_uuid == "staff-partner"
    assert client.job_manager_uuid == "staff-manager"

    plain = one_client(UUID="c", AccountManager=" staff-plain ")
    (client,) = xml.iter_clients([clients_doc(plain)])
    assert client.account_manager_uuid == "staff-plain"
    assert client.job_manager_uuid is None

    # A link with something in it but no identifier is set (it resolves to nobody); an empty one
    # is unset (SPEC A2, A3).
    name_only = one_client(UUID="c", AccountManager="<UUID /><Name>No Id</Name>", JobManager="<UUID />")
    (client,) = xml.iter_clients([clients_doc(name_only)])
    assert client.account_manager_uuid == "No Id"
    assert client.job_manager_uuid is None

    email_only = one_client(UUID="c", JobManager="<UUID> </UUID><Email>max@firm.example</Email>")
    (client,) = xml.iter_clients([clients_doc(email_only)])
    assert client.job_manager_uuid == "max@firm.example"


def test_contacts_and_groups_keep_document_order():
    (client,) = xml.iter_clients([clients_doc(CLIENT_BODY)])
    assert [(c.uuid, c.name, c.salutation, c.is_primary, c.is_deleted) for c in client.contacts] == [
        ("k-1", "First", "Bob", False, False),
        ("k-2", "Second", "Ann", True, True),
    ]
    assert [(g.uuid, g.name) for g in client.groups] == [("g-9", "Zeta"), ("g-1", "Alpha")]


def test_a_repeated_element_takes_the_first_copy_that_holds_something():
    # Xero documents a detailed client's FirstName and LastName twice: in the general block and in
    # the Practice Manager block, either copy possibly empty.
    body = """<Client><UUID>c-1</UUID><Name>Jo Bloggs</Name>
      <FirstName /> <!-- for individuals only --><LastName></LastName>
      <Email>  </Email>
      <Contacts /><AccountManager><UUID>staff-partner</UUID></AccountManager>
      <!-- The following fields are returned if the Practice Management module is enabled -->
      <FirstName>Jo</FirstName><LastName> Bloggs </LastName>
      <Email>jo@example.com</Email><Email>second@example.com</Email>
      <Contacts><Contact><UUID>k-1</UUID><Name>Kim</Name></Contact></Contacts>
      <AccountManager><UUID>staff-other</UUID></AccountManager>
      <BusinessStructure>Individual</BusinessStructure></Client>"""
    (client,) = xml.iter_clients([clients_doc(body)])
    assert (client.first_name, client.last_name) == ("Jo", "Bloggs")
    assert client.email == "jo@example.com"  # of two copies holding something, the first
    assert [contact.uuid for contact in client.contacts] == ["k-1"]
    assert client.account_manager_uuid == "staff-partner"


def test_empty_contacts_and_groups_are_empty_tuples():
    (client,) = xml.iter_clients([clients_doc(one_client(UUID="c", Contacts="", Groups=""))])
    assert client.contacts == ()
    assert client.groups == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Yes", True),
        ("YES", True),
        (" yes ", True),
        ("true", True),
        ("No", False),
        ("no", False),
        ("False", False),
        ("", False),
        ("maybe", False),
    ],
)
def test_yes_no_flags(value, expected):
    (client,) = xml.iter_clients([clients_doc(one_client(UUID="c", IsArchived=value))])
    assert client.is_archived is expected


def test_unknown_elements_anywhere_are_ignored():
    doc = (
        b"<Response><Status>OK</Status><Extra><Client><UUID>not-a-record</UUID></Client></Extra>"
        b"<Clients><Paging page='1'/><Client><UUID>c</UUID><Name>N</Name><Brand><New>1</New></Brand>"
        b"<Relationships><Relationship><RelatedClient><UUID>r</UUID></RelatedClient></Relationship>"
        b"</Relationships></Client></Clients><Trailer>t</Trailer></Response>"
    )
    clients = list(xml.iter_clients([doc]))
    assert [(c.uuid, c.name) for c in clients] == [("c", "N")]


def test_status_error_with_http_200_carries_the_description():
    doc = (
        b"<Response><Status>ERROR</Status>"
        b"<ErrorDescription>  Invalid\n\tmodifiedsince \x01value  </ErrorDescription></Response>"
    ).replace(b"\x01", b"&#x7f;")
    with pytest.raises(xml.XpmStatusError) as caught:
        list(xml.iter_clients([doc]))
    assert isinstance(caught.value, XpmBadResponse)
    assert caught.value.description == "Invalid modifiedsince value"
    assert "Invalid modifiedsince value" in str(caught.value)


def test_status_error_description_is_truncated():
    doc = (
        b"<Response><Status>ERROR</Status><ErrorDescription>"
        + b"x" * 5000
        + b"</ErrorDescription></Response>"
    )
    with pytest.raises(xml.XpmStatusError) as caught:
        list(xml.iter_staff([doc]))
    assert caught.value.description is not None
    assert len(caught.value.description) <= 300
    assert caught.value.description.endswith("...")


def test_status_error_yields_nothing_even_with_records():
    doc = b"<Response><Status>ERROR</Status><Clients><Client><UUID>c</UUID></Client></Clients></Response>"
    seen: list[object] = []
    with pytest.raises(xml.XpmStatusError):
        seen.extend(xml.iter_clients([doc]))
    assert seen == []


def test_missing_status_is_refused():
    with pytest.raises(XpmBadResponse, match="Status"):
        list(xml.iter_clients([b"<Response><Clients /></Response>"]))


def test_other_root_is_refused():
    with pytest.raises(XpmBadResponse, match="Response"):
        list(xml.iter_clients([b"<html><body>Gateway</body></html>"]))


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Response><Status>OK</Status><Clients><Client><UUID>c</UUID><Name>&xxe;</Name></Client></Clients></Response>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Response><Status>OK</Status><Clients><Client><UUID>c</UUID><Name>&lol9;</Name></Client></Clients></Response>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Response SYSTEM "http://127.0.0.1:9/evil.dtd">
<Response><Status>OK</Status><Clients /></Response>"""


@pytest.mark.parametrize(
    "doc", [XXE, BILLION_LAUGHS, EXTERNAL_DTD], ids=["xxe", "billion-laughs", "external-dtd"]
)
def test_dtds_and_entities_are_refused_without_expanding(doc):
    seen: list[object] = []
    with pytest.raises(XpmBadResponse) as caught:
        seen.extend(xml.iter_clients([doc]))
    assert seen == []
    assert "root:" not in str(caught.value)


def test_truncated_document_is_refused_as_truncated():
    doc = clients_doc(CLIENT_BODY, CLIENT_BODY.replace("c-1", "c-2"))
    with pytest.raises(xml.XpmTruncatedResponse):
        list(xml.iter_clients([doc[: len(doc) // 2]]))
    with pytest.raises(xml.XpmTruncatedResponse):
        list(xml.iter_clients([doc[:-3]]))


def test_empty_body_is_truncated():
    with pytest.raises(xml.XpmTruncatedResponse):
        list(xml.iter_clients([]))


def test_records_before_a_truncation_are_yielded_first():
    doc = clients_doc(CLIENT_BODY, CLIENT_BODY.replace("c-1", "c-2"))
    cut = doc[: doc.index(b"c-2") + 3]
    records = xml.iter_clients([cut])
    assert next(records).uuid == "c-1"
    with pytest.raises(xml.XpmTruncatedResponse):
        next(records)


@pytest.mark.parametrize(
    "doc",
    [
        b"<Response><Status>OK</Status><Clients><Client><UUID>c</Name></Client></Clients></Response>",
        b"<Response><Status>OK</Status><Clients></Response>",
        b"<Response><Status>OK</Status></Response><Response />",
        b"not xml at all",
        b"<Response><Status>OK</Status><Clients><Client><UUID>c & d</UUID></Client></Clients></Response>",
    ],
    ids=["mismatched", "unclosed-in-middle", "two-roots", "garbage", "bare-ampersand"],
)
def test_malformed_documents_are_refused(doc):
    with pytest.raises(XpmBadResponse) as caught:
        list(xml.iter_clients([doc]))
    assert not isinstance(caught.value, xml.XpmTruncatedResponse)


def test_a_record_without_uuid_is_handed_on_for_the_sync_to_report_alone():
    # SPEC A4: one record without a UUID is an error for that record, never for the whole answer.
    first, second = xml.iter_clients([clients_doc(one_client(Name="No id") + one_client(UUID="c-2"))])

    assert (first.uuid, first.name) == ("", "No id")
    assert second.uuid == "c-2"


def test_a_uuid_too_long_to_be_one_is_handed_on_as_none():
    # It would key the record's state and index entries, which DynamoDB refuses past 1,024 bytes.
    doc = clients_doc(one_client(UUID="U" * 257, Name="Long Id") + one_client(UUID="u" * 256, Name="Fits"))
    assert [client.uuid for client in xml.iter_clients([doc])] == ["", "u" * 256]
    staff = STAFF.replace(b"<UUID>s-1</UUID>", b"<UUID>" + "é".encode() * 129 + b"</UUID>")
    assert [member.uuid for member in xml.iter_staff([staff])] == [""]


def test_a_web_link_xpm_sends_is_kept():
    (client,) = xml.iter_clients(
        [clients_doc(one_client(UUID="c-1", WebUrl="https://practicemanager.xero.com/Client/c-1"))]
    )

    assert client.web_url == "https://practicemanager.xero.com/Client/c-1"


def test_an_oversized_element_outside_a_record_is_refused_while_streaming():
    head = b"<Response><Status>OK</Status><ErrorDescription>"
    fed: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(100):
            fed.append(1)
            yield b"x" * 65536

    with pytest.raises(XpmBadResponse, match="element over"):
        list(xml.iter_clients(chunks(), max_text_chars=1_000_000))
    # Refused as soon as the limit was passed, not after reading the whole 6.5 MB.
    assert len(fed) <= 17


def test_a_long_note_the_sync_never_reads_is_cut_off_and_the_client_read():
    """The probe of 2026-12-07 (evening): a 1,000,001-character note failed every full read."""
    note = b"<Client><UUID>c-2</UUID><Name>Noted Ltd</Name><Notes><Note><Text>"

    def chunks() -> Iterator[bytes]:
        yield b"<Response><Status>OK</Status><Clients><Client><UUID>c-1</UUID></Client>" + note
        for _ in range(100):
            yield b"x" * 65536
        yield b"</Text></Note></Notes></Client><Client><UUID>c-3</UUID></Client></Clients></Response>"

    tracemalloc.start()
    try:
        clients = list(xml.iter_clients(chunks(), max_text_chars=1_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert [(c.uuid, c.name, c.oversized) for c in clients] == [
        ("c-1", None, False),
        ("c-2", "Noted Ltd", False),
        ("c-3", None, False),
    ]
    assert peak < 4_000_000, "the 6.5 MB note is not held: it is cut off at the limit"


@pytest.mark.parametrize(
    "oversized",
    [
        "<Name>{big}</Name>",
        "<Address>{big}</Address>",
        "<AccountManager><Name>{big}</Name></AccountManager>",
        "<Contacts><Contact><Salutation>{big}</Salutation></Contact></Contacts>",
        "<Groups><Group><Name>{big}</Name></Group></Groups>",
    ],
)
def test_a_client_with_a_value_too_long_to_read_is_flagged_alone(oversized: str) -> None:
    big = "y" * 2_001
    doc = clients_doc(
        one_client(UUID="c-1", ClientCode="ONE"),
        f"<Client><UUID>c-2</UUID><ClientCode>TWO</ClientCode>{oversized.format(big=big)}</Client>",
        one_client(UUID="c-3", ClientCode="THREE"),
    )

    clients = list(xml.iter_clients([doc], max_text_chars=2_000))

    assert [(c.uuid, c.client_code, c.oversized) for c in clients] == [
        ("c-1", "ONE", False),
        ("c-2", "TWO", True),
        ("c-3", "THREE", False),
    ]
    assert big[:100] not in clients[1].model_dump_json()


@pytest.mark.parametrize(
    "unread",
    [
        "<Contacts><Contact><Name>Al</Name><Position>{big}</Position></Contact></Contacts>",
        "<Groups><Group><Name>First</Name></Group><Group><Name>{big}</Name></Group></Groups>",
        "<AccountManager><UUID>s-1</UUID><Phone>{big}</Phone></AccountManager>",
    ],
)
def test_a_value_too_long_to_read_where_the_sync_reads_nothing_flags_nothing(unread: str) -> None:
    """A review of the evening's change: any cut-off node of a contact or group failed the client."""
    doc = clients_doc(
        f"<Client><UUID>c-1</UUID><ClientCode>ONE</ClientCode>{unread.format(big='z' * 2_001)}</Client>"
    )

    [client] = list(xml.iter_clients([doc], max_text_chars=2_000))

    assert (client.uuid, client.client_code, client.oversized) == ("c-1", "ONE", False)


def test_a_staff_member_with_a_value_too_long_to_read_is_flagged_alone() -> None:
    doc = (
        "<Response><Status>OK</Status><StaffList>"
        f"<Staff><UUID>s-1</UUID><Name>Ann Able</Name><Phone>{'9' * 2_001}</Phone></Staff>"
        f"<Staff><UUID>s-2</UUID><Email>{'e' * 2_001}</Email></Staff>"
        "</StaffList></Response>"
    ).encode()

    staff = list(xml.iter_staff([doc], max_text_chars=2_000))

    # A phone the sync never maps fails nothing (a review of the evening's change: it failed the
    # staff member, and every client they partner with it).
    assert [(s.uuid, s.name, s.oversized) for s in staff] == [("s-1", "Ann Able", False), ("s-2", None, True)]


def test_oversized_document_is_refused():
    doc = clients_doc(*(one_client(UUID=f"c{i}") for i in range(200)))
    with pytest.raises(XpmBadResponse, match="larger than"):
        list(xml.iter_clients([doc[i : i + 100] for i in range(0, len(doc), 100)], max_document_bytes=5000))


def test_deep_nesting_is_refused():
    doc = b"<Response><Status>OK</Status>" + b"<a>" * 200 + b"</a>" * 200 + b"</Response>"
    with pytest.raises(XpmBadResponse, match="nested"):
        list(xml.iter_clients([doc]))


def test_one_byte_chunks_split_every_tag():
    doc = clients_doc(CLIENT_BODY, CLIENT_BODY.replace("c-1", "c-2"))
    whole = list(xml.iter_clients([doc]))
    trickled = list(xml.iter_clients(doc[i : i + 1] for i in range(len(doc))))
    assert trickled == whole
    assert [c.uuid for c in trickled] == ["c-1", "c-2"]


def test_multibyte_characters_split_across_chunks():
    doc = clients_doc(one_client(UUID="c", Name="Zoë & Søn — Café"))
    doc = doc.replace(b"&", b"&amp;")
    (client,) = xml.iter_clients(doc[i : i + 1] for i in range(len(doc)))
    assert client.name == "Zoë & Søn — Café"


def test_records_are_yielded_before_the_document_ends():
    first = clients_doc(one_client(UUID="c-1"), one_client(UUID="c-2"))
    head = first[: first.index(b"<Client><UUID>c-2")]
    produced: list[str] = []

    def chunks() -> Iterator[bytes]:
        produced.append("head")
        yield head
        produced.append("tail")
        yield first[len(head) :]

    records = xml.iter_clients(chunks())
    assert next(records).uuid == "c-1"
    assert produced == ["head"]
    assert next(records).uuid == "c-2"


def test_memory_stays_flat_for_a_large_list():
    count = 3000

    def chunks() -> Iterator[bytes]:
        yield b"<Response><Status>OK</Status><Clients>"
        for i in range(count):
            yield CLIENT_BODY.replace("c-1", f"c-{i}").encode()
        yield b"</Clients></Response>"

    tracemalloc.start()
    try:
        seen = 0
        peak_after_warmup = 0
        for seen, _client in enumerate(xml.iter_clients(chunks()), start=1):
            if seen == 100:
                tracemalloc.reset_peak()
            if seen > 100:
                peak_after_warmup = max(peak_after_warmup, tracemalloc.get_traced_memory()[1])
        assert seen == count
    finally:
        tracemalloc.stop()
    # ~4 MB of XML went through; holding it (or its elements) would take far more than this.
    assert peak_after_warmup < 1_000_000


def test_sanitise_bounds_and_flattens():
    assert xml.sanitise(None) is None
    assert xml.sanitise("  \n ") is None
    assert xml.sanitise("a\r\nb\x00c", 100) == "a b c"
    assert xml.sanitise("abcdefghij", 6) == "abc..."
