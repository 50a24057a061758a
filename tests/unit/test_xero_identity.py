"""Xero OAuth (SPEC A6, A8) against the Xero simulator over a real loopback socket.

Shapes the simulator cannot be made to produce (a null tenantName next to other tenant types,
a 503, a dropped connection, junk JSON) use httpx.MockTransport: still no network.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from moto import mock_aws
from xpm_sync.adapters.tokens import REFRESH_MARGIN_SECONDS
from xpm_sync.adapters.xero_identity import (
    FALLBACK_EXPIRES_IN,
    SCOPES,
    AccessDenied,
    AppCredentials,
    AppCredentialsUnavailable,
    Connection,
    IdentityUnreachable,
    InvalidClient,
    InvalidGrant,
    RevocationRefused,
    TokenSet,
    XeroIdentity,
    XeroIdentityError,
    XeroUser,
    load_app_credentials,
    new_code_verifier,
    s256_challenge,
    user_from_id_token,
)

from local.xpm_sim import generate_practice
from tests.fakes import FakeClock
from tests.fixtures.simulator import identity_answered_by, identity_on, running_simulator

CLIENT_ID = "app-client-id"
CLIENT_SECRET = "app-client-secret-value"
REDIRECT_URI = "https://active.example/admin/integrations/xpm/callback"
VERIFIER = new_code_verifier()


@pytest.fixture
def sim() -> Iterator[object]:
    with running_simulator(CLIENT_ID, CLIENT_SECRET) as simulator:
        yield simulator


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def identity(sim, http: httpx.Client, clock: FakeClock) -> XeroIdentity:
    return identity_on(sim, http, clock, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)


def authorization_code(identity: XeroIdentity, http: httpx.Client, state: str = "state-1") -> str:
    """Play the browser: open the authorize URL and read the code off the redirect."""
    url = identity.authorize_url(
        redirect_uri=REDIRECT_URI, state=state, code_challenge=s256_challenge(VERIFIER)
    )
    answer = http.get(url, follow_redirects=False)
    assert answer.status_code in (302, 303), answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = parse_qs(location.query)
    assert query["state"] == [state]
    return query["code"][0]


def connect(identity: XeroIdentity, http: httpx.Client) -> TokenSet:
    return identity.exchange_code(
        code=authorization_code(identity, http), redirect_uri=REDIRECT_URI, code_verifier=VERIFIER
    )


def jwt(claims: object) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def mocked(handler: Callable[[httpx.Request], httpx.Response], clock: FakeClock) -> XeroIdentity:
    return identity_answered_by(handler, clock, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)


# --- authorize URL (SPEC A8) ---


def test_authorize_url_asks_for_the_spec_scopes_and_carries_the_state(identity: XeroIdentity, sim) -> None:
    url = urlsplit(identity.authorize_url(redirect_uri=REDIRECT_URI, state="s-123", code_challenge="c" * 43))
    query = parse_qs(url.query)

    assert f"{url.scheme}://{url.netloc}" == sim.url.rstrip("/")
    assert url.path == "/identity/connect/authorize"
    assert query == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": [REDIRECT_URI],
        "scope": [SCOPES],
        "state": ["s-123"],
        "code_challenge": ["c" * 43],
        "code_challenge_method": ["S256"],
    }
    assert set(SCOPES.split()) == {
        "openid",
        "profile",
        "email",
        "offline_access",
        "practicemanager.client.read",
        "practicemanager.staff.read",
    }


def test_authorize_url_never_contains_the_client_secret(identity: XeroIdentity) -> None:
    assert CLIENT_SECRET not in identity.authorize_url(
        redirect_uri=REDIRECT_URI, state="s", code_challenge="c"
    )


def test_pkce_verifiers_are_fresh_and_their_s256_challenge_is_rfc_7636s() -> None:
    # RFC 7636 appendix B's example.
    assert (
        s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    verifiers = {new_code_verifier() for _ in range(20)}
    assert len(verifiers) == 20
    assert all(43 <= len(v) <= 128 and v.replace("-", "").replace("_", "").isalnum() for v in verifiers)


def test_the_code_exchange_sends_the_verifier_and_the_simulator_checks_it(
    identity: XeroIdentity, http: httpx.Client
) -> None:
    code = authorization_code(identity, http)

    with pytest.raises(InvalidGrant):
        identity.exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=new_code_verifier())
    assert identity.exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=VERIFIER).refresh_token


# --- code exchange and who connected (SPEC A6) ---


def test_code_exchange_returns_tokens_expiring_from_the_clock(
    identity: XeroIdentity, http: httpx.Client, clock: FakeClock
) -> None:
    tokens = connect(identity, http)

    assert tokens.access_token
    assert tokens.refresh_token
    assert tokens.id_token
    assert tokens.expires_at == int(clock.now().timestamp()) + 30 * 60


def test_id_token_names_the_xero_user_who_allowed_access(
    identity: XeroIdentity, http: httpx.Client, sim
) -> None:
    sim.set_consenting_user("Priya Natarajan", "priya@firm.example")

    tokens = connect(identity, http)

    assert user_from_id_token(tokens.id_token) == XeroUser("Priya Natarajan", "priya@firm.example")


def test_a_code_is_single_use(identity: XeroIdentity, http: httpx.Client) -> None:
    code = authorization_code(identity, http)
    identity.exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=VERIFIER)

    with pytest.raises(InvalidGrant):
        identity.exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=VERIFIER)


def test_a_wrong_client_secret_is_invalid_client(sim, http: httpx.Client, clock: FakeClock) -> None:
    good = identity_on(sim, http, clock, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    code = authorization_code(good, http)
    bad = identity_on(sim, http, clock, client_id=CLIENT_ID, client_secret="not-the-secret")

    with pytest.raises(InvalidClient) as caught:
        bad.exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=VERIFIER)
    assert "not-the-secret" not in str(caught.value)


# --- refresh and revoke (SPEC A8) ---


def test_refresh_rotates_the_refresh_token(
    identity: XeroIdentity, http: httpx.Client, clock: FakeClock
) -> None:
    first = connect(identity, http)
    clock.advance(seconds=60)

    second = identity.refresh(first.refresh_token)

    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert second.expires_at == int(clock.now().timestamp()) + 30 * 60


def test_refresh_with_a_revoked_grant_is_invalid_grant(
    identity: XeroIdentity, http: httpx.Client, sim
) -> None:
    tokens = connect(identity, http)
    sim.revoke_all()

    with pytest.raises(InvalidGrant) as caught:
        identity.refresh(tokens.refresh_token)
    assert tokens.refresh_token not in str(caught.value)


def test_revoke_ends_the_grant(identity: XeroIdentity, http: httpx.Client) -> None:
    tokens = connect(identity, http)

    identity.revoke(tokens.refresh_token)

    with pytest.raises(InvalidGrant):
        identity.refresh(tokens.refresh_token)


@pytest.mark.parametrize("status", [200, 202, 204])
def test_revoke_accepts_any_2xx(clock: FakeClock, status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == "https://identity.xero.test/connect/revocation"
        return httpx.Response(status)

    mocked(handler, clock).revoke("rt-1")


def test_revoke_refused_is_an_error(clock: FakeClock) -> None:
    identity = mocked(lambda request: httpx.Response(400, json={"error": "invalid_grant"}), clock)

    with pytest.raises(InvalidGrant):
        identity.revoke("rt-1")


@pytest.mark.parametrize(
    ("status", "body"), [(400, {"error": "unsupported_token_type"}), (400, {"error": "invalid_request"})]
)
def test_a_revocation_request_refused_for_good_says_so(clock: FakeClock, status: int, body: object) -> None:
    identity = mocked(lambda request: httpx.Response(status, json=body), clock)

    with pytest.raises(RevocationRefused, match=str(status)):
        identity.revoke("rt-1")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, None),
        (401, None),
        (403, {"error": "forbidden"}),
        (404, None),
        (408, None),
        (429, None),
        (503, None),
    ],
)
def test_a_revocation_worth_trying_again_is_not_refused_for_good(
    clock: FakeClock, status: int, body: object
) -> None:
    # A gateway's 403, a 404 from a wrong URL, a bare 400: the tokens are kept for a retry.
    identity = mocked(lambda request: httpx.Response(status, json=body), clock)

    with pytest.raises(XeroIdentityError) as caught:
        identity.revoke("rt-1")
    assert not isinstance(caught.value, RevocationRefused)


@pytest.mark.parametrize("status", [200, 201, 203])
def test_token_and_connections_accept_any_2xx(clock: FakeClock, status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/connect/token":
            return httpx.Response(
                status, json={"access_token": "at-2", "refresh_token": "rt-2", "expires_in": 1800}
            )
        return httpx.Response(
            status, json=[{"tenantId": "t-pm", "tenantType": "PRACTICEMANAGER", "tenantName": "PM"}]
        )

    identity = mocked(handler, clock)

    assert identity.refresh("rt-1").access_token == "at-2"
    assert identity.connections("at-2") == [Connection("t-pm", "PM", "PRACTICEMANAGER")]


# --- token answers: read leniently once Xero has rotated the refresh token (SPEC A8) ---


def token_answer(**fields: object) -> Callable[[httpx.Request], httpx.Response]:
    """A token endpoint answering 200 with ``fields`` (a field set to ... is left out)."""
    body = {k: v for k, v in fields.items() if v is not ...}
    return lambda request: httpx.Response(200, json=body)


def grant(identity: XeroIdentity, how: str) -> TokenSet:
    if how == "refresh":
        return identity.refresh("rt-1")
    return identity.exchange_code(code="code-1", redirect_uri=REDIRECT_URI, code_verifier=VERIFIER)


@pytest.mark.parametrize("how", ["refresh", "code"])
@pytest.mark.parametrize("expires_in", [1800, 1800.0, 1800.7, "1800", " 1800 ", "1800.0"])
def test_expires_in_is_read_from_a_number_or_a_numeric_string(
    clock: FakeClock, how: str, expires_in: object
) -> None:
    identity = mocked(token_answer(access_token="at-2", refresh_token="rt-2", expires_in=expires_in), clock)

    assert grant(identity, how).expires_at == int(clock.now().timestamp()) + 1800


@pytest.mark.parametrize("how", ["refresh", "code"])
@pytest.mark.parametrize(
    "expires_in",
    [..., None, "", "soon", "30 minutes", True, 0, -60, 0.5, "nan", "inf", [1800], {"s": 1800}],
    ids=repr,
)
def test_an_answer_without_a_usable_expires_in_keeps_the_tokens_with_a_short_lifetime(
    clock: FakeClock, how: str, expires_in: object
) -> None:
    identity = mocked(token_answer(access_token="at-2", refresh_token="rt-2", expires_in=expires_in), clock)

    tokens = grant(identity, how)

    # The rotated refresh token is handed back to be stored, not lost to an exception.
    assert (tokens.access_token, tokens.refresh_token) == ("at-2", "rt-2")
    assert tokens.expires_at == int(clock.now().timestamp()) + FALLBACK_EXPIRES_IN


def test_the_fallback_lifetime_is_short_but_outlasts_the_refresh_margin() -> None:
    # Long enough that the token is used before the next refresh, well short of Xero's 30 minutes.
    assert REFRESH_MARGIN_SECONDS < FALLBACK_EXPIRES_IN <= 10 * 60


def test_a_refresh_answer_with_unknown_fields_and_no_id_token_is_read(clock: FakeClock) -> None:
    identity = mocked(
        token_answer(
            access_token="at-2",
            refresh_token="rt-2",
            expires_in=1800,
            token_type="Bearer",
            scope=SCOPES,
            something_new={"nested": [1, 2]},
        ),
        clock,
    )

    tokens = identity.refresh("rt-1")

    assert tokens == TokenSet("at-2", "rt-2", int(clock.now().timestamp()) + 1800, id_token=None)


@pytest.mark.parametrize("how", ["refresh", "code"])
@pytest.mark.parametrize("refresh_token", [..., None, "", 42])
def test_an_answer_without_a_refresh_token_is_still_an_error(
    clock: FakeClock, how: str, refresh_token: object
) -> None:
    identity = mocked(token_answer(access_token="at-2", refresh_token=refresh_token, expires_in=1800), clock)

    with pytest.raises(XeroIdentityError, match="without a refresh_token") as caught:
        grant(identity, how)
    assert "at-2" not in str(caught.value)


# --- connections (SPEC A6, A8) ---


def test_connections_keep_only_practice_manager_tenants(
    identity: XeroIdentity, http: httpx.Client, sim
) -> None:
    practice = generate_practice(1, staff=3, clients=3, problem_share=0)
    sim.add_practice(practice)
    sim.add_organisation("Demo Company (AU)")
    tokens = connect(identity, http)

    connections = identity.connections(tokens.access_token)

    assert len(connections) == 1
    assert connections[0].tenant_type == "PRACTICEMANAGER"
    assert connections[0].tenant_id


def test_connections_keep_a_null_tenant_name(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == "https://api.xero.test/connections"
        assert request.headers["authorization"] == "Bearer at-1"
        return httpx.Response(
            200,
            json=[
                {"id": "c1", "tenantId": "t-org", "tenantType": "ORGANISATION", "tenantName": "Org"},
                {"id": "c2", "tenantId": "t-pm", "tenantType": "PRACTICEMANAGER", "tenantName": None},
                {
                    "id": "c3",
                    "tenantId": "t-pm2",
                    "tenantType": "PRACTICEMANAGER",
                    "tenantName": "Smith & Co",
                },
            ],
        )

    assert mocked(handler, clock).connections("at-1") == [
        Connection("t-pm", None, "PRACTICEMANAGER"),
        Connection("t-pm2", "Smith & Co", "PRACTICEMANAGER"),
    ]


def test_connections_with_a_rejected_access_token_is_access_denied(clock: FakeClock) -> None:
    identity = mocked(lambda request: httpx.Response(401, json={"Title": "Unauthorized"}), clock)

    with pytest.raises(AccessDenied) as caught:
        identity.connections("secret-access-token")
    assert "secret-access-token" not in str(caught.value)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(403, text="<html>Access denied</html>"),
        httpx.Response(
            403, json={"Title": "Forbidden", "Status": 403, "Detail": "AuthenticationUnsuccessful"}
        ),
    ],
)
def test_a_403_from_connections_may_pass_and_asks_for_no_reconnect(
    clock: FakeClock, answer: httpx.Response
) -> None:
    """The probe of 2026-12-07: a 403 (a gateway's, undocumented here) was taken as Xero refusing the
    token, and the firm went to needs_reconnect for good."""
    identity = mocked(lambda request: answer, clock)

    with pytest.raises(XeroIdentityError) as caught:
        identity.connections("at-1")
    assert not isinstance(caught.value, AccessDenied)


def test_a_practice_listed_by_two_connections_is_one_tenant(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json=[
                {"id": "c1", "tenantId": "t-pm", "tenantType": "PRACTICEMANAGER", "tenantName": "Harbour"},
                {"id": "c2", "tenantId": "t-pm", "tenantType": "PRACTICEMANAGER", "tenantName": "Harbour"},
            ],
        )

    assert mocked(handler, clock).connections("at-1") == [Connection("t-pm", "Harbour", "PRACTICEMANAGER")]


# --- failures carry no token text ---


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, text="upstream down"),
        httpx.Response(500, json={"error": "server_error"}),
        httpx.Response(429, headers={"Retry-After": "5"}, json={"Title": "Too Many Requests"}),
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(200, json={"access_token": "only-half"}),
        httpx.Response(400, json={"error": "echo refresh-token-value back"}),
    ],
    ids=["503", "500", "429", "not-json", "no-refresh-token", "odd-error-code"],
)
def test_a_bad_token_answer_is_an_identity_error_without_token_text(
    answer: httpx.Response, clock: FakeClock
) -> None:
    identity = mocked(lambda request: answer, clock)

    with pytest.raises(XeroIdentityError) as caught:
        identity.refresh("refresh-token-value")
    # A 5xx or a 429 may pass (and a 5xx may have been carried out all the same): asked again.
    expected = IdentityUnreachable if answer.status_code in (429, 500, 503) else XeroIdentityError
    assert type(caught.value) is expected
    assert "refresh-token-value" not in str(caught.value)
    assert "only-half" not in str(caught.value)


def test_a_network_error_is_an_identity_error_without_token_text(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot send {request.content!r}", request=request)

    with pytest.raises(IdentityUnreachable) as caught:
        mocked(handler, clock).refresh("refresh-token-value")
    assert "refresh-token-value" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_the_token_request_uses_http_basic_client_auth(clock: FakeClock) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": "a", "refresh_token": "r", "expires_in": 1800})

    mocked(handler, clock).refresh("r0")

    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert seen[0].url == "https://identity.xero.test/connect/token"
    assert seen[0].headers["authorization"] == f"Basic {expected}"
    assert parse_qs(seen[0].content.decode()) == {"grant_type": ["refresh_token"], "refresh_token": ["r0"]}


# --- id_token decoding ---


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"name": "Ana Lima", "email": "ana@x.example"}, XeroUser("Ana Lima", "ana@x.example")),
        ({"given_name": "Ana", "family_name": "Lima"}, XeroUser("Ana Lima", None)),
        ({"given_name": " Ana ", "email": " ana@x.example "}, XeroUser("Ana", "ana@x.example")),
        ({"name": "  ", "family_name": "Lima"}, XeroUser("Lima", None)),
        ({"name": 42, "email": ["x"]}, XeroUser(None, None)),
        (["not", "an", "object"], XeroUser(None, None)),
    ],
)
def test_user_from_id_token_reads_name_and_email(claims: object, expected: XeroUser) -> None:
    assert user_from_id_token(jwt(claims)) == expected


@pytest.mark.parametrize("junk", [None, "", "abc", "a.b", "a.!!!.c", "a.bm90IGpzb24.c", "a.b.c.d"])
def test_user_from_id_token_never_raises_on_junk(junk: str | None) -> None:
    assert user_from_id_token(junk) == XeroUser(None, None)


# --- secrets stay out of reprs; app credentials from Secrets Manager (SPEC B2) ---


def test_reprs_hide_secrets_and_tokens() -> None:
    credentials = AppCredentials("cid", "very-secret")
    tokens = TokenSet("access-value", "refresh-value", 123, "id-token-value")

    assert "very-secret" not in repr(credentials)
    assert "cid" in repr(credentials)
    for value in ("access-value", "refresh-value", "id-token-value"):
        assert value not in repr(tokens)


@mock_aws
def test_app_credentials_load_from_their_secret() -> None:
    client = boto3.client("secretsmanager")
    client.create_secret(
        Name="xpm-sync/app", SecretString=json.dumps({"client_id": "cid", "client_secret": "csecret"})
    )

    assert load_app_credentials(client, "xpm-sync/app") == AppCredentials("cid", "csecret")


@mock_aws
@pytest.mark.parametrize("body", ["not json", "[]", json.dumps({"client_id": "cid"})])
def test_a_malformed_app_secret_is_an_error_naming_the_secret(body: str) -> None:
    client = boto3.client("secretsmanager")
    client.create_secret(Name="xpm-sync/app", SecretString=body)

    with pytest.raises(AppCredentialsUnavailable, match="xpm-sync/app"):
        load_app_credentials(client, "xpm-sync/app")


@mock_aws
def test_an_app_secret_that_cannot_be_read_is_an_error_naming_the_secret_and_the_cause() -> None:
    with pytest.raises(AppCredentialsUnavailable, match=r"xpm-sync/app could not be read \(ResourceNotFound"):
        load_app_credentials(boto3.client("secretsmanager"), "xpm-sync/app")
