"""SPEC A6 / B4 / B5: connect and the OAuth callback, through lambda_handler with API Gateway events.

Given an admin of a firm and the Xero simulator; when the admin connects and Xero redirects back;
then the tokens are in the firm's secret only and the setup page learns the outcome from the URL.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from xpm_sync.adapters.oauth_states import STATE_KEY_PREFIX
from xpm_sync.adapters.tokens import TokenStore, TokenStoreError

from local.xpm_sim import generate_practice
from tests.fixtures.api import FIRM, OTHER_FIRM, ApiHarness, admin_claims

SETUP_PAGE = "http://127.0.0.1:5173/admin/integrations/xpm"


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _assert_nothing_stored(api: ApiHarness, firm_id: str = FIRM) -> None:
    assert api.secret(firm_id) is None
    config = api.config_item(firm_id) or {}
    assert config.get("status", "not_connected") == "not_connected"


# --- POST /integrations/xpm/connect ---------------------------------------------------------------


def test_connect_answers_an_authorize_url_with_a_fresh_state_bound_to_the_firm(api: ApiHarness) -> None:
    answer = api.call_oauth("connect", claims=admin_claims(), body={"sync_name": "Head office sync"})

    assert answer.status == 200
    url = answer.json["authorize_url"]
    assert url.startswith(f"{api.sim.url}/identity/connect/authorize?")
    query = _query(url)
    assert query["client_id"] == "local-client-id"
    assert query["redirect_uri"] == "http://127.0.0.1:3000/integrations/xpm/callback"
    assert "offline_access" in query["scope"]
    assert "practicemanager.client.read" in query["scope"]
    assert len(query["state"]) >= 43
    stored = api.config_item(STATE_KEY_PREFIX + hashlib.sha256(query["state"].encode()).hexdigest())
    assert stored is not None
    assert stored["state_firm_id"] == FIRM
    assert stored["user_sub"] == "7d8f2c1e-4b3a-4e9b-9c1d-2f6a8b0e1c3d"
    assert 590 <= int(stored["expires_at"]) - int(api.clock.now().timestamp()) <= 600
    # The state itself is never stored, only its hash.
    assert all(query["state"] not in str(item) for item in api.config_items())
    assert api.config()["sync_name"] == "Head office sync"


def test_connect_needs_only_the_firm_and_admin_group_claims(api: ApiHarness) -> None:
    # SPEC B4 names only these two claims; without Cognito's sub the flow still completes.
    claims = {**admin_claims(), "sub": None, "email": None, "cognito:username": None}
    answer = api.call_oauth("connect", claims=claims, body={"sync_name": "Head office sync"})
    assert answer.status == 200, answer.text

    done = api.callback(api.consent(answer.json["authorize_url"]))

    assert done.location_query == {"connected": "1"}
    assert api.config()["status"] == "connected"


def test_a_rotated_app_secret_applies_to_the_next_request(api: ApiHarness) -> None:
    api.connect()
    api.sim.register_app("rotated-client-id", "rotated-client-secret")
    boto3.client("secretsmanager").put_secret_value(
        SecretId=api.names.app_secret_id,
        SecretString=json.dumps({"client_id": "rotated-client-id", "client_secret": "rotated-client-secret"}),
    )

    authorize_url = api.start_connect()
    done = api.callback(api.consent(authorize_url))

    assert _query(authorize_url)["client_id"] == "rotated-client-id"
    assert done.location_query == {"connected": "1"}


@pytest.mark.parametrize("broken", ["deleted", "not JSON"])
def test_an_app_secret_that_cannot_be_used_is_our_500_not_xeros_fault(api: ApiHarness, broken: str) -> None:
    secrets = boto3.client("secretsmanager")
    if broken == "deleted":
        secrets.delete_secret(SecretId=api.names.app_secret_id, ForceDeleteWithoutRecovery=True)
    else:
        secrets.put_secret_value(SecretId=api.names.app_secret_id, SecretString="not json")

    answer = api.call_oauth("connect", claims=admin_claims(), body={})

    assert answer.status == 500
    assert answer.json["error"]["code"] == "INTERNAL_ERROR"
    assert api.names.app_secret_id not in answer.text


def test_each_connect_gets_its_own_state(api: ApiHarness) -> None:
    first = _query(api.start_connect())["state"]
    second = _query(api.start_connect())["state"]
    assert first != second


@pytest.mark.parametrize("body", [None, {"sync_name": "XPM Sync"}])
def test_connect_creates_the_config_item_with_its_b3_attributes(api: ApiHarness, body: object) -> None:
    answer = api.call_oauth("connect", claims=admin_claims(), body=body)

    assert answer.status == 200
    config = api.config()
    assert config["status"] == "not_connected"
    assert config["sync_enabled"] is False


def test_connect_again_leaves_status_and_schedule_as_they_are(api: ApiHarness) -> None:
    api.connect()
    table = boto3.resource("dynamodb").Table(api.names.config_table)
    table.update_item(
        Key={"firm_id": FIRM},
        UpdateExpression="SET sync_enabled = :on",
        ExpressionAttributeValues={":on": True},
    )

    api.start_connect()

    assert api.config()["status"] == "connected"
    assert api.config()["sync_enabled"] is True


def test_the_callback_ensures_sync_enabled_exists(api: ApiHarness) -> None:
    query = api.consent(api.start_connect())
    table = boto3.resource("dynamodb").Table(api.names.config_table)
    table.update_item(Key={"firm_id": FIRM}, UpdateExpression="REMOVE sync_enabled")

    api.callback(query)

    assert api.config()["status"] == "connected"
    assert api.config()["sync_enabled"] is False


def test_connect_without_a_body_keeps_the_sync_name(api: ApiHarness) -> None:
    api.start_connect(sync_name="Named once")
    answer = api.call_oauth("connect", claims=admin_claims(), body=None)
    assert answer.status == 200
    assert api.config()["sync_name"] == "Named once"


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"cognito:groups": "staff"}, 403),
        ({"cognito:groups": None}, 403),
        ({"custom:firm_id": None}, 403),
        (None, 401),
    ],
)
def test_connect_is_for_a_firms_admins_only(
    api: ApiHarness, claims: dict[str, Any] | None, status: int
) -> None:
    answer = api.call_oauth("connect", claims=claims)
    assert answer.status == status
    assert set(answer.json) == {"error"}
    assert answer.json["error"]["code"] in ("FORBIDDEN", "UNAUTHORIZED")
    assert not [item for item in api.config_items() if item["firm_id"].startswith(STATE_KEY_PREFIX)]


@pytest.mark.parametrize("body", ["{not json", {"sync_name": 42}, {"sync_name": "x" * 101}])
@pytest.mark.parametrize(("claims", "status"), [({"cognito:groups": "staff"}, 403), (None, 401)])
def test_connect_checks_the_caller_before_the_body(
    api: ApiHarness, body: object, claims: dict[str, Any] | None, status: int
) -> None:
    answer = api.call_oauth("connect", claims=claims, body=body)

    assert answer.status == status
    assert set(answer.json) == {"error"}
    assert answer.json["error"]["code"] in ("FORBIDDEN", "UNAUTHORIZED")


def test_the_callback_stays_public_with_a_staff_authorizer_context(api: ApiHarness) -> None:
    answer = api.call_oauth("callback", claims={"cognito:groups": "staff"}, query={"code": "c", "state": "s"})

    assert answer.status == 302
    assert answer.location_query == {"error": "invalid_state"}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ("{not json", 400, None),
        ({"sync_name": 42}, 422, "sync_name"),
        ({"sync_name": "   "}, 422, "sync_name"),
        ({"sync_name": "x" * 101}, 422, "sync_name"),
    ],
)
def test_connect_refuses_a_bad_body(api: ApiHarness, body: object, status: int, field: str | None) -> None:
    answer = api.call_oauth("connect", claims=admin_claims(), body=body)
    assert answer.status == status
    assert answer.json["error"].get("field") == field


# --- GET /integrations/xpm/callback ---------------------------------------------------------------


def test_callback_stores_the_tokens_and_records_who_connected(api: ApiHarness) -> None:
    tenant_id = api.sim.practices[0].tenant_id

    answer = api.callback(api.consent(api.start_connect()))

    assert answer.status == 302
    assert answer.location == f"{SETUP_PAGE}?connected=1"
    secret = api.secret()
    assert secret is not None
    assert set(secret) >= {"access_token", "refresh_token", "expires_at"}
    config = api.config()
    assert config["status"] == "connected"
    assert config["connected_by_name"] == "Pat Partner"
    assert config["connected_by_email"] == "pat@firm-a.example"
    assert config["connected_at"].endswith("Z")
    assert config["tenant_id"] == tenant_id
    # Tokens live in the secret only.
    assert secret["refresh_token"] not in str(api.config_items())


def test_callback_preselects_no_tenant_when_xero_returns_several(api: ApiHarness) -> None:
    api.sim.add_practice(generate_practice(seed=2, staff=3, clients=3, problem_share=0))

    api.connect()

    assert "tenant_id" not in api.config()


def test_reconnecting_with_several_tenants_preselects_none_even_the_earlier_choice(api: ApiHarness) -> None:
    api.connect()
    chosen = api.config()["tenant_id"]
    assert chosen == api.sim.practices[0].tenant_id
    api.sim.add_practice(generate_practice(seed=2, staff=3, clients=3, problem_share=0))

    api.connect()

    config = api.config()
    assert "tenant_id" not in config
    assert "tenant_name" not in config
    assert config["status"] == "connected"


def test_callback_ignores_organisations_that_are_not_practice_manager(api: ApiHarness) -> None:
    api.sim.add_organisation("Demo Company (AU)")

    api.connect()

    assert api.config()["tenant_id"] == api.sim.practices[0].tenant_id


def test_consent_denied_at_xero_redirects_with_access_denied_and_stores_nothing(api: ApiHarness) -> None:
    api.sim.faults.add("deny_consent")
    query = api.consent(api.start_connect())
    assert query["error"] == "access_denied"

    answer = api.callback(query)

    assert answer.status == 302
    assert answer.location == f"{SETUP_PAGE}?error=access_denied"
    _assert_nothing_stored(api)
    # The state is burnt: the same state cannot be used later with a code.
    replay = api.callback({"code": "anything", "state": query["state"]})
    assert replay.location_query == {"error": "invalid_state"}


@pytest.mark.parametrize(
    "state",
    [None, "", "short", "b1946ac92492d2347c6235b4d2611184", "A" * 43, "x" * 500, "bad state with spaces" * 3],
)
def test_an_unknown_or_malformed_state_is_refused(api: ApiHarness, state: str | None) -> None:
    query = api.consent(api.start_connect())
    query.pop("state")
    if state is not None:
        query["state"] = state

    answer = api.callback(query)

    assert answer.status == 302
    assert answer.location_query == {"error": "invalid_state"}
    _assert_nothing_stored(api)
    assert not api.sim.calls_to("/connect/token")


def test_a_repeated_state_is_refused_with_a_redirect_not_a_422(api: ApiHarness) -> None:
    query = api.consent(api.start_connect())
    event_query = {"code": query["code"], "state": query["state"]}

    answer = api.call_oauth(
        "callback",
        claims=None,
        query=event_query,
        multi_query={"code": [query["code"]], "state": [query["state"], "other"]},
    )

    assert answer.status == 302
    assert answer.location_query == {"error": "invalid_state"}
    _assert_nothing_stored(api)


def test_an_expired_state_is_refused_even_before_dynamodb_deletes_it(api: ApiHarness) -> None:
    query = api.consent(api.start_connect())
    api.clock.advance(10 * 60 + 1)

    answer = api.callback(query)

    assert answer.location_query == {"error": "invalid_state"}
    _assert_nothing_stored(api)


def test_a_state_can_be_used_once(api: ApiHarness) -> None:
    query = api.consent(api.start_connect())
    assert api.callback(query).location_query == {"connected": "1"}
    secret_before = api.secret()

    replay = api.callback(query)

    assert replay.location_query == {"error": "invalid_state"}
    assert api.secret() == secret_before


def test_the_state_decides_the_firm_not_the_caller(api: ApiHarness) -> None:
    query = api.consent(api.start_connect(OTHER_FIRM))

    api.callback(query)

    assert api.secret(OTHER_FIRM) is not None
    assert api.secret(FIRM) is None


def test_a_missing_code_is_refused(api: ApiHarness) -> None:
    query = api.consent(api.start_connect())
    query.pop("code")

    answer = api.callback(query)

    assert answer.location_query == {"error": "missing_code"}
    _assert_nothing_stored(api)


def test_a_failed_code_exchange_redirects_with_an_error_and_stores_nothing(api: ApiHarness) -> None:
    query = api.consent(api.start_connect())
    api.sim.faults.add("invalid_grant")

    answer = api.callback(query)

    assert answer.status == 302
    assert answer.location_query == {"error": "exchange_failed"}
    _assert_nothing_stored(api)


def test_a_code_that_xero_does_not_know_is_refused(api: ApiHarness) -> None:
    query = api.consent(api.start_connect())
    query["code"] = "not-a-code-xero-issued"

    assert api.callback(query).location_query == {"error": "exchange_failed"}
    _assert_nothing_stored(api)


def test_xero_unavailable_during_the_exchange_is_an_error_not_a_500(api: ApiHarness) -> None:
    query = api.consent(api.start_connect())
    api.sim.faults.add("unavailable", path="/connect/token")

    answer = api.callback(query)

    assert answer.status == 302
    assert answer.location_query == {"error": "exchange_failed"}
    _assert_nothing_stored(api)


def test_connections_failing_after_the_exchange_stores_nothing(api: ApiHarness) -> None:
    query = api.consent(api.start_connect())
    api.sim.faults.add("unavailable", path="/connections")

    answer = api.callback(query)

    assert answer.location_query == {"error": "connections_failed"}
    _assert_nothing_stored(api)
    # The grant just issued is stored nowhere, so it is ended at Xero rather than left alive.
    assert len(api.sim.calls_to("/connect/revocation")) == 1


def test_another_error_from_xero_is_reported_without_echoing_it(api: ApiHarness) -> None:
    query = {"error": "<script>alert(1)</script>", "state": _query(api.start_connect())["state"]}

    answer = api.callback(query)

    assert answer.location_query == {"error": "xero_error"}
    _assert_nothing_stored(api)


def test_a_storage_failure_still_sends_the_browser_back(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = api.consent(api.start_connect())

    def refuse(*_: object) -> None:
        raise TokenStoreError("could not write secret xpm-sync-local/firm/firm-a: AccessDeniedException")

    monkeypatch.setattr(TokenStore, "save", refuse)

    answer = api.callback(query)

    assert answer.status == 302
    assert answer.location_query == {"error": "server_error"}
    assert (api.config_item() or {}).get("status", "not_connected") == "not_connected"


def test_no_token_code_or_state_ever_reaches_a_response_or_the_logs(
    api: ApiHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    query = api.consent(api.start_connect())
    api.callback(query)
    api.callback(query)
    secret = api.secret()
    assert secret is not None

    captured = capsys.readouterr()
    seen = captured.out + captured.err + "".join(a.text + str(a.headers) for a in api.answers[1:])
    for value in (secret["access_token"], secret["refresh_token"], query["code"], query["state"]):
        assert value not in seen
