"""The Xero + XPM simulator, driven over a real socket the way the sync's httpx clients drive it."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC
from urllib.parse import parse_qs, urlsplit
from xml.etree.ElementTree import Element

import httpx
import pytest
from defusedxml import ElementTree as ET

from local.xpm_sim import (
    PROBLEM_KINDS,
    Practice,
    SimClient,
    Simulator,
    abn_is_valid,
    generate_practice,
    start_simulator,
)
from local.xpm_sim.identity import s256
from tests.fixtures.simulator import SIM_CLIENT_ID, SIM_CLIENT_SECRET

REDIRECT = "https://app.example.com/admin/integrations/xpm/callback"
VERIFIER = "v" * 43 + "-._~0123456789"
PKCE = {"code_challenge": s256(VERIFIER), "code_challenge_method": "S256"}
STAFF = "/practicemanager/3.1/staff.api/list"
CLIENTS = "/practicemanager/3.1/client.api/list"
GET = "/practicemanager/3.1/client.api/get/"
AUTH = (SIM_CLIENT_ID, SIM_CLIENT_SECRET)


@pytest.fixture
def http(simulator: Simulator):
    with httpx.Client(base_url=simulator.url, timeout=10) as client:
        yield client


def xpm_headers(tokens: dict[str, object], practice: Practice) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}", "xero-tenant-id": practice.tenant_id}


def claims(id_token: str) -> dict[str, object]:
    _header, payload, signature = id_token.split(".")
    assert signature
    padded = payload + "=" * (-len(payload) % 4)
    return dict(json.loads(base64.urlsafe_b64decode(padded)))


def refresh(http: httpx.Client, token: str) -> httpx.Response:
    return http.post(
        "/connect/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=AUTH
    )


# -- identity -------------------------------------------------------------------------------------


def test_code_flow_redirects_exchanges_once_and_carries_the_consenting_user(simulator, http):
    simulator.set_consenting_user("Mary Jane Smith", "mj@practice.example")
    answer = http.get(
        "/identity/connect/authorize",
        params={
            "response_type": "code",
            "client_id": SIM_CLIENT_ID,
            "redirect_uri": REDIRECT,
            "scope": "openid profile email offline_access practicemanager.client.read",
            "state": "s-123",
            **PKCE,
        },
    )
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["s-123"]
    code = query["code"][0]

    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
    }
    tokens = http.post("/connect/token", data=form, auth=AUTH)
    assert tokens.status_code == 200
    body = tokens.json()
    assert body["expires_in"] == 1800
    assert body["token_type"] == "Bearer"
    assert {"access_token", "refresh_token", "scope", "id_token"} <= body.keys()
    user = claims(body["id_token"])
    assert (user["given_name"], user["family_name"], user["name"]) == (
        "Mary Jane",
        "Smith",
        "Mary Jane Smith",
    )
    assert user["email"] == "mj@practice.example"
    assert user["xero_userid"]

    # Single use, and bound to the client's secret.
    assert http.post("/connect/token", data=form, auth=AUTH).json() == {"error": "invalid_grant"}
    wrong = http.post("/connect/token", data=form, auth=(SIM_CLIENT_ID, "nope"))
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_client"})


def test_authorize_refuses_unknown_apps_and_honours_deny_consent(simulator, http):
    params = {"response_type": "code", "client_id": "stranger", "redirect_uri": REDIRECT, "state": "x"}
    assert http.get("/identity/connect/authorize", params=params).status_code == 400

    simulator.faults.add("deny_consent")
    params["client_id"] = SIM_CLIENT_ID
    denied = http.get("/identity/connect/authorize", params=params)
    assert parse_qs(urlsplit(denied.headers["Location"]).query) == {
        "error": ["access_denied"],
        "state": ["x"],
    }


def test_code_expires_after_five_minutes(simulator, http):
    code = _authorize(http)
    simulator.advance_time(301)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
    }
    assert http.post("/connect/token", data=form, auth=AUTH).status_code == 400


def _authorize(http: httpx.Client, **pkce: str) -> str:
    """A code for the app, with ``pkce`` as the authorize request's PKCE parameters (default: S256
    of VERIFIER)."""
    params = {"response_type": "code", "client_id": SIM_CLIENT_ID, "redirect_uri": REDIRECT, "state": "s"}
    location = http.get("/identity/connect/authorize", params={**params, **(pkce or PKCE)}).headers[
        "Location"
    ]
    return parse_qs(urlsplit(location).query)["code"][0]


def _exchange(http: httpx.Client, code: str, verifier: str | None) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        form["code_verifier"] = verifier
    return http.post("/connect/token", data=form, auth=AUTH)


# -- PKCE, as Xero checks it (RFC 7636) -------------------------------------------------------------


@pytest.mark.parametrize(
    "verifier",
    [None, "w" * 43, VERIFIER[:-1], VERIFIER + "x", s256(VERIFIER), "short", "x" * 129],
    ids=["missing", "another", "one less", "one more", "the challenge itself", "too short", "too long"],
)
def test_the_token_endpoint_refuses_a_code_without_its_verifier(http, verifier):
    code = _authorize(http)

    refused = _exchange(http, code, verifier)

    assert (refused.status_code, refused.json()) == (400, {"error": "invalid_grant"})


@pytest.mark.parametrize(
    "pkce",
    [
        {"code_challenge_method": "S256"},
        {"code_challenge": s256(VERIFIER)},
        {"code_challenge": s256(VERIFIER), "code_challenge_method": "plain"},
        {"code_challenge": "not a challenge", "code_challenge_method": "S256"},
        {"code_challenge": VERIFIER, "code_challenge_method": "plain"},
    ],
    ids=["no challenge", "no method", "plain", "malformed", "plain verifier"],
)
def test_authorize_accepts_only_an_s256_challenge(http, pkce):
    params = {"response_type": "code", "client_id": SIM_CLIENT_ID, "redirect_uri": REDIRECT, "state": "s"}

    answer = http.get("/identity/connect/authorize", params={**params, **pkce})

    assert parse_qs(urlsplit(answer.headers["Location"]).query) == {
        "error": ["invalid_request"],
        "state": ["s"],
    }


def test_without_pkce_required_a_code_issued_without_a_challenge_takes_no_verifier(simulator, http):
    simulator.identity.require_pkce = False
    params = {"response_type": "code", "client_id": SIM_CLIENT_ID, "redirect_uri": REDIRECT, "state": "s"}
    first = parse_qs(
        urlsplit(http.get("/identity/connect/authorize", params=params).headers["Location"]).query
    )
    second = parse_qs(
        urlsplit(http.get("/identity/connect/authorize", params=params).headers["Location"]).query
    )

    # RFC 9700 §4.8.2: a verifier for a code issued without a challenge is a downgrade, refused.
    assert _exchange(http, first["code"][0], VERIFIER).status_code == 400
    assert _exchange(http, second["code"][0], None).status_code == 200


# -- what a consent grants ----------------------------------------------------------------------------


def test_a_consent_grants_only_the_tenants_consented_to(simulator, http):
    practice = generate_practice(seed=5, staff=2, clients=2, problem_share=0)
    simulator.add_practice(practice)
    organisation = simulator.add_organisation("Demo Company (AU)")
    simulator.consent_to([organisation])

    tokens = _exchange(http, _authorize(http), VERIFIER).json()
    connections = http.get(
        "/connections", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ).json()
    staff = http.get(STAFF, headers=xpm_headers(tokens, practice))

    assert [c["tenantId"] for c in connections] == [organisation]
    assert staff.status_code == 403, "a practice the consent did not grant is not reachable"
    simulator.consent_to(None)
    everything = _exchange(http, _authorize(http), VERIFIER).json()
    assert http.get(STAFF, headers=xpm_headers(everything, practice)).status_code == 200


def test_refresh_rotates_with_a_thirty_minute_grace(simulator, http):
    first = simulator.issue_tokens(SIM_CLIENT_ID)
    second = refresh(http, first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert "id_token" not in second

    simulator.advance_time(29 * 60)
    # The answer to the first refresh may have been lost: the old token still works for a while.
    assert refresh(http, first["refresh_token"]).status_code == 200
    simulator.advance_time(2 * 60)
    late = refresh(http, first["refresh_token"])
    assert (late.status_code, late.json()) == (400, {"error": "invalid_grant"})
    assert refresh(http, second["refresh_token"]).status_code == 200
    assert refresh(http, "never-issued").json() == {"error": "invalid_grant"}


def test_revocation_ends_the_grant(simulator, sim_practice, http):
    tokens = simulator.issue_tokens(SIM_CLIENT_ID)
    assert http.post("/connect/revocation", data={"token": "x"}, auth=("x", "y")).status_code == 401
    assert (
        http.post("/connect/revocation", data={"token": tokens["refresh_token"]}, auth=AUTH).status_code
        == 200
    )
    assert refresh(http, tokens["refresh_token"]).json() == {"error": "invalid_grant"}
    assert http.get("/connections", headers=xpm_headers(tokens, sim_practice)).status_code == 401
    assert http.get(STAFF, headers=xpm_headers(tokens, sim_practice)).status_code == 401


def test_revoke_all_and_invalid_grant_fault(simulator, http):
    tokens = simulator.issue_tokens(SIM_CLIENT_ID)
    simulator.faults.add("invalid_grant")
    assert refresh(http, tokens["refresh_token"]).json() == {"error": "invalid_grant"}
    assert refresh(http, tokens["refresh_token"]).status_code == 200
    simulator.revoke_all()
    assert refresh(http, tokens["refresh_token"]).status_code == 400


def test_connections_list_practices_and_organisations(simulator, sim_practice, http):
    org = simulator.add_organisation("Demo Accounting Org")
    nameless = generate_practice(seed=2, staff=2, clients=1, problem_share=0)
    nameless.tenant_name = None
    simulator.add_practice(nameless)
    tokens = simulator.issue_tokens(SIM_CLIENT_ID)
    answer = http.get("/connections", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert answer.status_code == 200
    rows = {row["tenantId"]: row for row in answer.json()}
    assert rows[sim_practice.tenant_id]["tenantType"] == "PRACTICEMANAGER"
    assert rows[sim_practice.tenant_id]["tenantName"] == "Demo Practice"
    assert rows[org]["tenantType"] == "ORGANISATION"
    assert rows[nameless.tenant_id]["tenantName"] is None
    assert {"id", "authEventId", "createdDateUtc", "updatedDateUtc"} <= rows[org].keys()
    assert http.get("/connections").status_code == 401


# -- XPM ------------------------------------------------------------------------------------------


def test_staff_list_shape(simulator, sim_practice, http):
    tokens = simulator.issue_tokens(SIM_CLIENT_ID)
    answer = http.get(STAFF, headers=xpm_headers(tokens, sim_practice))
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/xml")
    for header in ("X-MinLimit-Remaining", "X-DayLimit-Remaining", "X-AppMinLimit-Remaining"):
        assert header in answer.headers
    root = ET.fromstring(answer.content)
    assert (root.tag, root.get("api-method"), root.findtext("Status")) == ("Response", "List", "OK")
    staff = root.findall("StaffList/Staff")
    assert [s.findtext("UUID") for s in staff] == [s.uuid for s in sim_practice.staff]
    assert [child.tag for child in staff[0]][:3] == ["UUID", "Name", "Email"]


def test_client_list_detailed_shape_and_escaping(simulator, sim_practice, http):
    target = sim_practice.clients[0]
    sim_practice.update_client(
        target.uuid,
        Name="Smith & Sons <Pty> Ltd",
        Address="  Level 2 \n\n 10 George St ",
        JobManager=None,
        Fax="",
    )
    tokens = simulator.issue_tokens(SIM_CLIENT_ID)
    answer = http.get(CLIENTS, params={"detailed": "true"}, headers=xpm_headers(tokens, sim_practice))
    assert answer.headers.get("Transfer-Encoding") == "chunked"
    root = ET.fromstring(answer.content)
    clients = root.findall("Clients/Client")
    assert len(clients) == 30
    first = clients[0]
    assert first.findtext("Name") == "Smith & Sons <Pty> Ltd"
    assert first.findtext("Address") == "  Level 2 \n\n 10 George St "
    assert first.find("JobManager") is None
    assert first.find("Fax") is not None
    assert first.findtext("Fax") == ""
    assert first.findtext("AccountManager/UUID") == target.account_manager_uuid
    tags = [child.tag for child in first]
    assert tags.index("UUID") < tags.index("Name") < tags.index("AccountManager") < tags.index("ClientCode")
    assert first.find("Contacts") is not None
    assert first.find("Groups") is not None
    for client in clients:
        assert client.findtext("IsArchived") in ("Yes", "No")
        assert client.findtext("BusinessStructure")
        primaries = [c for c in client.findall("Contacts/Contact") if c.findtext("IsPrimary") == "Yes"]
        assert len(primaries) == (1 if client.findall("Contacts/Contact") else 0)


def test_client_list_without_detail_is_basic(simulator, sim_practice, http):
    tokens = simulator.issue_tokens(SIM_CLIENT_ID)
    root = ET.fromstring(http.get(CLIENTS, headers=xpm_headers(tokens, sim_practice)).content)
    client = root.find("Clients/Client")
    assert client is not None
    assert client.findtext("Name")
    assert client.findtext("IsArchived")
    for absent in ("Contacts", "Groups", "BusinessStructure", "ClientCode"):
        assert client.find(absent) is None


def test_modifiedsince_filters_and_a_list_of_one_is_still_a_list(simulator, sim_practice, http):
    simulator.advance_time(3600)
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    since = simulator.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    empty = ET.fromstring(http.get(CLIENTS, params={"modifiedsince": since}, headers=headers).content)
    assert empty.find("Clients") is not None
    assert empty.findall("Clients/Client") == []

    simulator.advance_time(5)
    changed = sim_practice.clients[3]
    sim_practice.update_client(changed.uuid, ClientCode="NEW001")
    params = {"detailed": "true", "modifiedsince": since}
    root = ET.fromstring(http.get(CLIENTS, params=params, headers=headers).content)
    assert [c.findtext("UUID") for c in root.findall("Clients/Client")] == [changed.uuid]
    assert root.findtext("Clients/Client/ClientCode") == "NEW001"

    bad = ET.fromstring(http.get(CLIENTS, params={"modifiedsince": "yesterday"}, headers=headers).content)
    assert bad.findtext("Status") == "ERROR"


def test_client_get_and_unknown_client(simulator, sim_practice, http):
    tokens = simulator.issue_tokens(SIM_CLIENT_ID)
    headers = xpm_headers(tokens, sim_practice)
    wanted = sim_practice.clients[5]
    root = ET.fromstring(http.get(GET + wanted.uuid, headers=headers).content)
    assert (root.get("api-method"), root.findtext("Client/UUID")) == ("Get", wanted.uuid)
    missing = http.get(GET + "00000000-0000-0000-0000-000000000000", headers=headers)
    assert missing.status_code == 200
    error = ET.fromstring(missing.content)
    assert (error.findtext("Status"), error.findtext("ErrorDescription")) == ("ERROR", "Client not found")


def test_bearer_and_tenant_checks(simulator, sim_practice, http):
    tokens = simulator.issue_tokens(SIM_CLIENT_ID)
    good = xpm_headers(tokens, sim_practice)
    assert http.get(STAFF, headers={"xero-tenant-id": sim_practice.tenant_id}).json()["Detail"] == (
        "AuthenticationUnsuccessful"
    )
    org = simulator.add_organisation("Books Org")
    for tenant in (org, "not-a-tenant"):
        refused = http.get(STAFF, headers={**good, "xero-tenant-id": tenant})
        assert refused.status_code == 403
    staff_only = simulator.issue_tokens(SIM_CLIENT_ID, scope="openid practicemanager.staff.read")
    assert http.get(CLIENTS, headers=xpm_headers(staff_only, sim_practice)).status_code == 403

    simulator.advance_time(1801)
    expired = http.get(STAFF, headers=good)
    assert (expired.status_code, expired.json()["Detail"]) == (401, "TokenExpired")
    assert expired.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    fresh = simulator.issue_tokens(SIM_CLIENT_ID)
    assert http.get(STAFF, headers=xpm_headers(fresh, sim_practice)).status_code == 200
    simulator.expire_access_tokens()
    assert http.get(STAFF, headers=xpm_headers(fresh, sim_practice)).json()["Detail"] == "TokenExpired"


# -- faults ---------------------------------------------------------------------------------------


def test_gateway_faults(simulator, sim_practice, http):
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    simulator.faults.add("rate_limit", retry_after=7, problem="day")
    limited = http.get(STAFF, headers=headers)
    assert limited.status_code == 429
    assert (limited.headers["Retry-After"], limited.headers["X-Rate-Limit-Problem"]) == ("7", "day")
    simulator.faults.add("unavailable")
    assert http.get(STAFF, headers=headers).status_code == 503
    simulator.faults.add("server_error", path="client.api")
    assert http.get(STAFF, headers=headers).status_code == 200
    assert http.get(CLIENTS, headers=headers).status_code == 500
    simulator.faults.add("token_expired", times=2)
    assert [http.get(STAFF, headers=headers).json()["Detail"] for _ in range(2)] == ["TokenExpired"] * 2
    # As at Xero, the token refused as expired stays expired; a new one is served.
    assert http.get(STAFF, headers=headers).status_code == 401
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    assert http.get(STAFF, headers=headers).status_code == 200

    simulator.faults.add("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(STAFF, headers=headers)
    assert simulator.calls[-1].status == 0

    simulator.faults.add("unavailable", times=None, path="/connect/token")
    assert refresh(http, "whatever").status_code == 503
    assert refresh(http, "whatever").status_code == 503
    simulator.faults.clear()
    assert refresh(http, "whatever").status_code == 400


def test_slow_fault_delays_the_answer(simulator, sim_practice, http):
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    simulator.faults.add("slow", seconds=0.3)
    answer = http.get(STAFF, headers=headers)
    assert answer.status_code == 200
    assert answer.elapsed.total_seconds() >= 0.3


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("status_error", {"description": "Something & broke"}),
        ("truncated", {}),
        ("malformed", {}),
        ("xxe", {}),
        ("billion_laughs", {}),
        ("oversized", {"mb": 1}),
        ("oversized", {"mb": 1, "place": "header"}),
    ],
)
def test_content_faults(simulator, sim_practice, http, kind, params):
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    simulator.faults.add(kind, **params)
    answer = http.get(CLIENTS, params={"detailed": "true"}, headers=headers)
    assert answer.status_code == 200
    text = answer.text
    if kind == "status_error":
        root = ET.fromstring(answer.content)
        assert (root.findtext("Status"), root.findtext("ErrorDescription")) == ("ERROR", "Something & broke")
    elif kind in ("truncated", "malformed"):
        with pytest.raises(ET.ParseError):
            ET.fromstring(answer.content)
        if kind == "truncated":
            assert text.startswith('<Response api-method="List"><Status>OK</Status><Clients>')
    elif kind == "xxe":
        assert '<!ENTITY xxe SYSTEM "file:///etc/passwd">' in text
        assert "<Name>&xxe;</Name>" in text
    elif kind == "billion_laughs":
        assert "<!ENTITY lol9" in text
        assert "&lol9;" in text
    else:
        assert len(answer.content) > 1024 * 1024
    # Each fault was planned once: the next call is healthy again.
    assert ET.fromstring(http.get(CLIENTS, headers=headers).content).findtext("Status") == "OK"


def test_unknown_fault_kind_is_refused(simulator):
    with pytest.raises(ValueError, match="unknown fault kind"):
        simulator.faults.add("gremlins")


def test_wrong_tenant_fault_answers_the_gateways_403(simulator, sim_practice, http):
    # Given a connection whose practice disconnected the app (Xero's 403 for that tenant)
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    simulator.faults.add("wrong_tenant", times=2)

    # When XPM is called
    refused = [http.get(path, headers=headers) for path in (STAFF, CLIENTS)]

    # Then each call is refused as Xero's gateway refuses it, and the fault passes as planned
    assert [(r.status_code, r.json()["Detail"]) for r in refused] == [(403, "AuthenticationUnsuccessful")] * 2
    assert http.get(STAFF, headers=headers).status_code == 200


def test_drip_fault_sends_the_right_answer_a_few_bytes_at_a_time(simulator, sim_practice, http):
    # Given the client list planned to drip 2 KB every 0.2 s
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    whole = http.get(CLIENTS, params={"detailed": "true"}, headers=headers).content
    simulator.faults.add("drip", path="client.api/list", bytes=2048, every=0.2)

    # When it is read as it arrives
    arrivals: list[tuple[float, int]] = []
    started = time.monotonic()
    with http.stream("GET", CLIENTS, params={"detailed": "true"}, headers=headers) as answer:
        assert answer.status_code == 200
        body = b""
        for piece in answer.iter_raw():
            body += piece
            arrivals.append((time.monotonic() - started, len(body)))

    # Then the body is the one XPM gives, but its last part came only after every pause
    assert body == whole
    pieces = -(-len(whole) // 2048)
    assert pieces >= 3
    assert arrivals[-1][0] >= (pieces - 1) * 0.2 * 0.9
    halfway = next(at for at, received in arrivals if received >= len(whole) // 2)
    assert halfway < arrivals[-1][0] - 0.2, "the answer arrives in pieces, not all at the end"


def test_drip_fault_defaults_to_64_kb_every_two_seconds(simulator):
    simulator.faults.add("drip")

    [fault] = simulator.faults.pending

    assert fault.kind == "drip"
    assert fault.path is None, "without a path it hits XPM calls only"
    assert fault.applies_to(CLIENTS)
    assert not fault.applies_to("/connect/token")


# -- switches for what XPM sends (SPEC A2-A4) --------------------------------------------------------


def _clients(http: httpx.Client, simulator: Simulator, practice: Practice) -> list[Element]:
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), practice)
    answer = http.get(CLIENTS, params={"detailed": "true"}, headers=headers)
    assert answer.status_code == 200
    return list(ET.fromstring(answer.content).findall("Clients/Client"))


def test_a_prospect_is_listed_as_xpm_lists_one_and_can_become_a_client(simulator, sim_practice, http):
    # Given a prospect added in XPM, with no code and no partner yet
    prospect = sim_practice.add_prospect("Maybe Later Pty Ltd")

    # When the client list is read
    listed = _clients(http, simulator, sim_practice)[-1]

    # Then it is the last client, flagged IsProspect Yes, with no code and no partner
    assert listed.findtext("UUID") == prospect.uuid
    assert (listed.findtext("Name"), listed.findtext("IsProspect")) == ("Maybe Later Pty Ltd", "Yes")
    assert listed.find("ClientCode") is None
    assert listed.find("AccountManager") is None
    assert prospect.is_prospect
    partner = sim_practice.partner_staff()[0].uuid
    sim_practice.update_client(prospect.uuid, IsProspect=False, ClientCode="MAYB0001", AccountManager=partner)
    converted = _clients(http, simulator, sim_practice)[-1]
    assert (converted.findtext("IsProspect"), converted.findtext("ClientCode")) == ("No", "MAYB0001")
    assert converted.findtext("AccountManager/UUID") == partner


@pytest.mark.parametrize("deleted", [False, True], ids=["archived", "deleted"])
def test_a_recreated_client_has_a_new_uuid_and_the_same_code_and_the_old_one_stays_flagged(
    simulator, sim_practice, http, deleted
):
    # Given a client archived (or deleted) in XPM and typed in again
    old = sim_practice.clients[4]
    code, name = old.code, old.name

    fresh = sim_practice.recreate_client(old.uuid, deleted=deleted)

    # Then the list has both: the old one flagged, the new one live at the end, same code and name
    listed = {c.findtext("UUID"): c for c in _clients(http, simulator, sim_practice)}
    assert fresh.uuid != old.uuid
    assert listed[old.uuid].findtext("IsDeleted" if deleted else "IsArchived") == "Yes"
    new = listed[fresh.uuid]
    assert (new.findtext("ClientCode"), new.findtext("Name")) == (code, name)
    assert (new.findtext("IsArchived"), new.findtext("IsDeleted")) == ("No", "No")
    assert sim_practice.clients[-1] is fresh
    assert sim_practice.recreate_client(fresh.uuid).uuid not in {old.uuid, fresh.uuid}, "again: another UUID"


def test_a_client_switched_to_come_without_uuid_has_no_uuid_element(simulator, sim_practice, http):
    # Given one client XPM sends without its UUID
    target = sim_practice.clients[2]
    sim_practice.drop_uuid(target.uuid)

    # When the list is read
    listed = _clients(http, simulator, sim_practice)

    # Then that record alone has no <UUID>, and the others keep theirs
    without = [c for c in listed if c.find("UUID") is None]
    assert [c.findtext("ClientCode") for c in without] == [target.code]
    assert len(listed) == len(sim_practice.clients)
    sim_practice.drop_uuid(target.uuid, dropped=False)
    assert all(c.find("UUID") is not None for c in _clients(http, simulator, sim_practice))


def test_a_repeated_client_comes_again_with_the_same_uuid_in_one_answer(simulator, sim_practice, http):
    # Given XPM answering one client three times, the copies with another name
    target = sim_practice.clients[1]
    copies = sim_practice.repeat_client(target.uuid, copies=2, Name="Second Copy Pty Ltd")

    # When the list is read
    listed = _clients(http, simulator, sim_practice)

    # Then the UUID is there three times: first where it was, then the two copies at the end
    uuids = [c.findtext("UUID") for c in listed]
    assert uuids.count(target.uuid) == 3
    assert uuids.index(target.uuid) == 1
    assert [c.findtext("Name") for c in listed if c.findtext("UUID") == target.uuid][1:] == [
        "Second Copy Pty Ltd"
    ] * 2
    assert sim_practice.client(target.uuid) is target
    assert all(copy.uuid == target.uuid for copy in copies)
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    got = ET.fromstring(http.get(GET + target.uuid, headers=headers).content)
    assert got.findtext("Client/Name") == target.name, "client.api/get gives the first"


def test_a_450000_character_name_is_sent_whole(simulator, sim_practice, http):
    # Given a Name of 450,000 characters (under the sync's reader limit of 1,000,000)
    target = sim_practice.clients[0]
    sim_practice.update_client(target.uuid, Name="N" * 450_000)

    # When the list is read
    listed = _clients(http, simulator, sim_practice)

    # Then that Name arrives whole, and the other clients with it
    assert len(listed[0].findtext("Name") or "") == 450_000
    assert len(listed) == len(sim_practice.clients)


def test_web_urls_are_on_client_get_as_documented_and_in_lists_only_when_switched_on(
    simulator, sim_practice, http
):
    # Given a client, and XPM's v3.1 documentation: <WebUrl> beside the <Client> of client.api/get
    target = sim_practice.clients[3]
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)

    got = ET.fromstring(http.get(GET + target.uuid, headers=headers).content)
    plain = _clients(http, simulator, sim_practice)
    sim_practice.list_web_urls = True
    switched = _clients(http, simulator, sim_practice)

    # Then get carries it, the list carries none by default, and one per client when switched on
    url = got.findtext("WebUrl")
    assert url == f"https://practicemanager.xero.com/Client/{target.web_id}/Detail"
    assert got.find("Client/WebUrl") is None
    assert all(c.find("WebUrl") is None for c in plain)
    assert switched[3].findtext("WebUrl") == url
    assert len({c.findtext("WebUrl") for c in switched}) == len(switched)


def test_a_staff_member_who_left_is_no_longer_in_the_staff_list(simulator, sim_practice, http):
    leaver = sim_practice.staff[-1]

    sim_practice.remove_staff(leaver.uuid)

    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    root = ET.fromstring(http.get(STAFF, headers=headers).content)
    assert leaver.uuid not in [s.findtext("UUID") for s in root.findall("StaffList/Staff")]
    assert len(root.findall("StaffList/Staff")) == len(sim_practice.staff)


# -- limits and the record of calls ---------------------------------------------------------------


def test_sixty_first_call_in_a_minute_is_refused(simulator, sim_practice, http):
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    for number in range(60):
        answer = http.get(GET + "missing", headers=headers)
        assert answer.status_code == 200
        assert answer.headers["X-MinLimit-Remaining"] == str(59 - number)
    refused = http.get(STAFF, headers=headers)
    assert refused.status_code == 429
    assert refused.headers["X-Rate-Limit-Problem"] == "minute"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-DayLimit-Remaining"] == "4940"
    simulator.advance_time(61)
    assert http.get(STAFF, headers=headers).status_code == 200

    simulator.limits.enabled = False
    for _ in range(61):
        assert http.get(GET + "missing", headers=headers).status_code == 200


def test_concurrent_limit(simulator, sim_practice):
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    simulator.limits.concurrent = 2
    simulator.faults.add("slow", times=2, seconds=0.5)
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(base_url=simulator.url, timeout=10) as own:
            statuses.append(own.get(STAFF, headers=headers).status_code)

    slow = [threading.Thread(target=call) for _ in range(2)]
    for thread in slow:
        thread.start()
    # Both slow faults taken means both calls hold their slots, asleep, when the third arrives.
    for _ in range(200):
        if not simulator.faults.pending:
            break
        threading.Event().wait(0.01)
    with httpx.Client(base_url=simulator.url, timeout=10) as third:
        refused = third.get(STAFF, headers=headers)
    for thread in slow:
        thread.join()
    assert refused.status_code == 429
    assert refused.headers["X-Rate-Limit-Problem"] == "concurrent"
    assert statuses == [200, 200]


def test_calls_are_recorded(simulator, sim_practice, http):
    headers = xpm_headers(simulator.issue_tokens(SIM_CLIENT_ID), sim_practice)
    http.get(CLIENTS, params={"detailed": "true", "modifiedsince": "2024-01-01T00:00:00"}, headers=headers)
    http.get(STAFF, headers={"xero-tenant-id": sim_practice.tenant_id})
    first, second = simulator.calls
    assert (first.method, first.path, first.status) == ("GET", CLIENTS, 200)
    assert first.query == {"detailed": "true", "modifiedsince": "2024-01-01T00:00:00"}
    assert first.tenant_id == sim_practice.tenant_id
    assert first.at.tzinfo is not None
    assert second.status == 401
    assert len(simulator.calls_to("staff.api")) == 1
    simulator.reset_calls()
    assert simulator.calls == []


def test_mutators_stamp_the_simulator_clock(simulator, sim_practice):
    simulator.advance_time(7200)
    client = sim_practice.archive_client(sim_practice.clients[0].uuid)
    assert client.is_archived
    assert abs((client.modified_at - simulator.now()).total_seconds()) < 5
    sim_practice.delete_client(sim_practice.clients[1].uuid)
    assert sim_practice.clients[1].is_deleted
    added = SimClient(uuid="new-client", elements={"Name": "Newco Pty Ltd", "ClientCode": "NEW1"})
    sim_practice.add_client(added)
    assert sim_practice.client("new-client").modified_at >= client.modified_at
    member = sim_practice.update_staff(sim_practice.staff[0].uuid, Email=None)
    assert member.email is None
    with pytest.raises(KeyError):
        sim_practice.update_staff(member.uuid, Nickname="x")


def test_stop_and_context_manager():
    with start_simulator() as sim:
        url = sim.url
        assert httpx.get(url + "/nowhere").status_code == 404
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/nowhere", timeout=2)


# -- generator ------------------------------------------------------------------------------------


def test_generator_is_deterministic():
    assert generate_practice(7) == generate_practice(7)
    assert generate_practice(7) != generate_practice(8)
    assert generate_practice(7, tenant_id="t-1").tenant_id == "t-1"


def test_generator_without_problems_is_clean():
    practice = generate_practice(3, staff=10, clients=120, problem_share=0)
    assert practice.problems == {}
    assert practice.partners_without_active_user == []
    partners = {s.uuid for s in practice.partner_staff()}
    assert len(partners) == 2
    staff = {s.uuid for s in practice.staff}
    codes = [c.code for c in practice.clients]
    assert len(set(codes)) == len(codes)
    for client in practice.clients:
        assert client.account_manager_uuid in partners
        assert client.job_manager_uuid is None or client.job_manager_uuid in staff
        structure = client.elements["BusinessStructure"]
        if structure in ("Individual", "Sole Trader"):
            assert client.elements["FirstName"]
            assert client.elements["LastName"]
        if "BusinessNumber" in client.elements:
            assert abn_is_valid(client.elements["BusinessNumber"])
        assert len([c for c in client.contacts if c.is_primary]) == (1 if client.contacts else 0)
        assert len(client.groups) <= 2
    assert all(s.name and len(s.name.split()) >= 2 and s.email for s in practice.staff)
    structures = {c.elements["BusinessStructure"] for c in practice.clients}
    assert structures >= {"Individual", "Company", "Trust", "SMSF", "Self Managed Superannuation Fund"}
    assert any("\n" in (c.elements.get("Address") or "") for c in practice.clients)


def test_generator_plants_each_problem_where_it_says():
    practice = generate_practice(5, staff=20, clients=200, problem_share=0.1)
    assert set(practice.problems) == set(PROBLEM_KINDS)
    staff_kinds = {"one_word_staff_name", "staff_missing_email"}
    client_problems = sum(len(v) for k, v in practice.problems.items() if k not in staff_kinds)
    assert client_problems == 20
    by_uuid = {c.uuid: c for c in practice.clients}
    staff = {s.uuid: s for s in practice.staff}
    hidden = practice.partners_without_active_user
    assert len(hidden) == 1
    assert staff[hidden[0]].is_partner
    for uuid in practice.problems["missing_partner"]:
        assert by_uuid[uuid].account_manager_uuid is None
    for uuid in practice.problems["partner_not_in_active"]:
        assert by_uuid[uuid].account_manager_uuid == hidden[0]
    others = {
        c.account_manager_uuid
        for c in practice.clients
        if c.uuid not in practice.problems["partner_not_in_active"]
    }
    assert hidden[0] not in others
    codes = [c.code for c in practice.clients]
    for uuid in practice.problems["duplicate_code"]:
        code = by_uuid[uuid].code
        assert codes.count(code) == 2
        assert codes.index(code) < practice.clients.index(by_uuid[uuid])
    assert all(by_uuid[u].is_archived for u in practice.problems["archived"])
    assert all(
        not by_uuid[u].elements.get("BusinessStructure")
        for u in practice.problems["missing_business_structure"]
    )
    assert all(
        by_uuid[u].elements["BusinessStructure"] not in ("Individual", "Company", "Trust")
        for u in practice.problems["custom_business_structure"]
    )
    for uuid in practice.problems["individual_missing_name"]:
        elements = by_uuid[uuid].elements
        assert elements["BusinessStructure"] == "Individual"
        assert not elements.get("LastName")
    assert all(
        not abn_is_valid(by_uuid[u].elements["BusinessNumber"]) for u in practice.problems["invalid_abn"]
    )
    assert all(len((staff[u].name or "").split()) == 1 for u in practice.problems["one_word_staff_name"])
    assert all(not staff[u].email for u in practice.problems["staff_missing_email"])
    # Exactly the planted records are troubled: nothing else.
    troubled = {u for uuids in practice.problems.values() for u in uuids}
    assert sum(1 for c in practice.clients if c.uuid in troubled) == 20


def test_abn_checksum():
    assert abn_is_valid("51 824 753 556")
    assert abn_is_valid("51824753556")
    assert not abn_is_valid("51 824 753 557")
    assert not abn_is_valid("1234")
