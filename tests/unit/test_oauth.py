"""SPEC A6 / B4 / B5: connect and the OAuth callback, through lambda_handler with API Gateway events.

Given an admin of a firm and the Xero simulator; when the admin connects, Xero sends the browser
back to the Active setup page and that page posts the code and state as the signed-in admin; then
the tokens are in the firm's secret only and the answer is the firm's config. The state is bound
to the firm and the user who started the connect, and every authorize request carries PKCE S256.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from xpm_sync.adapters import aws
from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.oauth_states import STATE_KEY_PREFIX
from xpm_sync.adapters.tokens import LOCK_KEY_PREFIX, TokenStore, TokenStoreError

from local.xpm_sim import generate_practice
from local.xpm_sim.identity import s256
from tests.fixtures.api import (
    ADMIN_SUB,
    FIRM,
    OTHER_ADMIN_SUB,
    OTHER_FIRM,
    SETUP_CALLBACK_URL,
    ApiHarness,
    admin_claims,
)
from tests.fixtures.logs import powertools_json_log


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _state_item(api: ApiHarness, state: str) -> dict[str, Any] | None:
    return api.config_item(STATE_KEY_PREFIX + hashlib.sha256(state.encode()).hexdigest())


def _assert_nothing_stored(api: ApiHarness, firm_id: str = FIRM) -> None:
    assert api.secret(firm_id) is None
    config = api.config_item(firm_id) or {}
    assert config.get("status", "not_connected") == "not_connected"


def _assert_refused(answer: Any, status: int, code: str) -> None:
    assert answer.status == status, answer.text
    assert set(answer.json) == {"error"}
    assert answer.json["error"]["code"] == code


# --- POST /integrations/xpm/connect ---------------------------------------------------------------


def test_connect_answers_an_authorize_url_with_a_state_bound_to_the_firm_and_the_user(
    api: ApiHarness,
) -> None:
    answer = api.call_oauth("connect", claims=admin_claims(), body={"sync_name": "Head office sync"})

    assert answer.status == 200
    url = answer.json["authorize_url"]
    assert url.startswith(f"{api.sim.url}/identity/connect/authorize?")
    query = _query(url)
    assert query["client_id"] == "local-client-id"
    # SPEC A6: Xero sends the browser back to the Active setup page, not to the API.
    assert query["redirect_uri"] == SETUP_CALLBACK_URL
    assert "offline_access" in query["scope"]
    assert "practicemanager.client.read" in query["scope"]
    assert len(query["state"]) >= 43
    stored = _state_item(api, query["state"])
    assert stored is not None
    assert stored["state_firm_id"] == FIRM
    assert stored["user_sub"] == ADMIN_SUB
    assert 590 <= int(stored["expires_at"]) - int(api.clock.now().timestamp()) <= 600
    # The state itself is never stored, only its hash.
    assert all(query["state"] not in str(item) for item in api.config_items())
    # The name waits with the state for a consent that connects the firm.
    assert stored["sync_name"] == "Head office sync"
    assert "sync_name" not in api.config()


def test_every_authorize_request_carries_a_pkce_s256_challenge_whose_verifier_stays_on_the_server(
    api: ApiHarness,
) -> None:
    first = _query(api.start_connect())
    second = _query(api.start_connect())

    for query in (first, second):
        assert query["code_challenge_method"] == "S256"
        verifier = (_state_item(api, query["state"]) or {})["code_verifier"]
        assert 43 <= len(verifier) <= 128
        assert query["code_challenge"] == s256(verifier)
        assert verifier not in "".join(answer.text for answer in api.answers)
    assert first["code_challenge"] != second["code_challenge"]


def test_connect_needs_the_signed_in_users_sub_to_bind_the_state_to(api: ApiHarness) -> None:
    claims = {**admin_claims(), "sub": None, "cognito:username": None}

    answer = api.call_oauth("connect", claims=claims, body={"sync_name": "Head office sync"})

    _assert_refused(answer, 401, "UNAUTHORIZED")
    assert not [item for item in api.config_items() if item["firm_id"].startswith(STATE_KEY_PREFIX)]


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
    assert done.status == 200, done.text


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
    assert not [item for item in api.config_items() if item["firm_id"].startswith(STATE_KEY_PREFIX)]


def test_each_connect_gets_its_own_state(api: ApiHarness) -> None:
    first = _query(api.start_connect())["state"]
    second = _query(api.start_connect())["state"]
    assert first != second


def _connected_with_the_hourly_sync_on(api: ApiHarness) -> None:
    api.connect()
    api.update_config(sync_enabled=True)


@pytest.mark.parametrize("body", [None, {"sync_name": "XPM Sync"}])
def test_connect_creates_the_config_item_with_its_b3_attributes(api: ApiHarness, body: object) -> None:
    answer = api.call_oauth("connect", claims=admin_claims(), body=body)

    assert answer.status == 200
    config = api.config()
    assert config["status"] == "not_connected"
    assert config["sync_enabled"] is False


def test_connect_again_leaves_status_and_schedule_as_they_are(api: ApiHarness) -> None:
    _connected_with_the_hourly_sync_on(api)

    api.start_connect()

    assert api.config()["status"] == "connected"
    assert api.config()["sync_enabled"] is True


def test_the_callback_ensures_sync_enabled_exists(api: ApiHarness) -> None:
    sent_back = api.consent(api.start_connect())
    aws.table(api.names.config_table).update_item(
        Key={"firm_id": FIRM}, UpdateExpression="REMOVE sync_enabled"
    )

    api.callback(sent_back)

    assert api.config()["status"] == "connected"
    assert api.config()["sync_enabled"] is False


def test_the_sync_name_given_with_connect_is_kept_once_the_consent_connects_the_firm(api: ApiHarness) -> None:
    answer = api.callback(api.consent(api.start_connect(sync_name="Head office sync")))

    assert answer.status == 200, answer.text
    assert answer.json["sync_name"] == "Head office sync"
    assert api.config()["sync_name"] == "Head office sync"


def test_connect_without_a_body_keeps_the_sync_name(api: ApiHarness) -> None:
    api.callback(api.consent(api.start_connect(sync_name="Named once")))

    authorize_url = api.call_oauth("connect", claims=admin_claims(), body=None).json["authorize_url"]
    answer = api.callback(api.consent(authorize_url))

    assert answer.status == 200, answer.text
    assert api.config()["sync_name"] == "Named once"


def test_a_refused_consent_leaves_the_sync_name_as_it_was(api: ApiHarness) -> None:
    api.callback(api.consent(api.start_connect(sync_name="Named once")))
    api.sim.faults.add("deny_consent")

    answer = api.callback(api.consent(api.start_connect(sync_name="Renamed")))

    _assert_refused(answer, 400, "XERO_CONSENT_DENIED")
    assert api.config()["sync_name"] == "Named once"


@pytest.mark.parametrize("case", ["connect", "callback"])
@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"cognito:groups": "staff"}, 403),
        ({"cognito:groups": None}, 403),
        ({"custom:firm_id": None}, 403),
        (None, 401),
    ],
)
def test_connect_and_callback_are_for_a_firms_admins_only(
    api: ApiHarness, case: str, claims: dict[str, Any] | None, status: int
) -> None:
    answer = api.call_oauth(case, claims=claims)

    _assert_refused(answer, status, "FORBIDDEN" if status == 403 else "UNAUTHORIZED")
    assert not [item for item in api.config_items() if item["firm_id"].startswith(STATE_KEY_PREFIX)]
    assert not api.sim.calls_to("/connect/token")


@pytest.mark.parametrize("case", ["connect", "callback"])
@pytest.mark.parametrize("body", ["{not json", {"sync_name": 42, "state": 42}, {"sync_name": "x" * 101}])
@pytest.mark.parametrize(("claims", "status"), [({"cognito:groups": "staff"}, 403), (None, 401)])
def test_connect_and_callback_check_the_caller_before_the_body(
    api: ApiHarness, case: str, body: object, claims: dict[str, Any] | None, status: int
) -> None:
    answer = api.call_oauth(case, claims=claims, body=body)

    _assert_refused(answer, status, "FORBIDDEN" if status == 403 else "UNAUTHORIZED")


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


# --- POST /integrations/xpm/callback: the happy path and who connected ----------------------------


def test_the_callback_answers_the_config_as_get_does_and_stores_the_tokens(api: ApiHarness) -> None:
    tenant_id = api.sim.practices[0].tenant_id

    answer = api.callback(api.consent(api.start_connect()))

    assert answer.status == 200
    assert answer.json == api.call_api("get_config").json
    assert answer.json["status"] == "connected"
    assert answer.json["connected_by"] == {"name": "Pat Partner", "email": "pat@firm-a.example"}
    assert answer.json["tenant_id"] == tenant_id
    secret = api.secret()
    assert secret is not None
    assert set(secret) >= {"access_token", "refresh_token", "expires_at"}
    config = api.config()
    assert config["status"] == "connected"
    assert config["connected_at"].endswith("Z")
    # Tokens live in the secret only.
    assert secret["refresh_token"] not in str(api.config_items())
    assert secret["refresh_token"] not in answer.text


def test_the_code_is_exchanged_with_the_connects_pkce_verifier(api: ApiHarness) -> None:
    """The simulator refuses a code without the verifier of its challenge: if the callback did not
    send the state's own verifier, no connect could succeed."""
    sent_back = api.consent(api.start_connect())
    table = aws.table(api.names.config_table)
    key = STATE_KEY_PREFIX + hashlib.sha256(sent_back["state"].encode()).hexdigest()
    table.update_item(
        Key={"firm_id": key},
        UpdateExpression="SET code_verifier = :other",
        ExpressionAttributeValues={":other": "x" * 64},
    )

    answer = api.callback(sent_back)

    _assert_refused(answer, 502, "XERO_UNAVAILABLE")
    _assert_nothing_stored(api)
    assert [call.status for call in api.sim.calls_to("/connect/token")] == [400]


# --- the state: one time, ten minutes, the firm and the user who started the connect --------------


@pytest.mark.parametrize(
    ("claims", "who"),
    [
        (admin_claims(OTHER_FIRM), "an admin of another firm, same sub"),
        (admin_claims(OTHER_FIRM, sub=OTHER_ADMIN_SUB), "an admin of another firm"),
        (admin_claims(FIRM, sub=OTHER_ADMIN_SUB), "another admin of the same firm"),
        (admin_claims(FIRM, sub=None, **{"cognito:username": "someone-else"}), "a user named otherwise"),
    ],
)
def test_a_state_issued_to_anyone_else_is_refused_and_stores_nothing(
    api: ApiHarness, claims: dict[str, Any], who: str
) -> None:
    sent_back = api.consent(api.start_connect(FIRM))

    answer = api.callback(sent_back, claims=claims)

    _assert_refused(answer, 400, "OAUTH_STATE_INVALID")
    _assert_nothing_stored(api, FIRM)
    _assert_nothing_stored(api, OTHER_FIRM)
    assert not api.sim.calls_to("/connect/token"), f"{who}: the code was exchanged"
    # Nobody can burn another admin's state: it is still good for the admin it was issued to.
    assert api.callback(sent_back, FIRM).status == 200


def test_a_consent_phished_with_the_attackers_state_never_lands_in_the_attackers_firm(
    api: ApiHarness,
) -> None:
    """RFC 9700 §4.7: firm B's admin sends firm A's XPM admin an authorize link carrying B's state.
    A allows access; Xero sends A's browser to A's setup page, which posts as A: refused."""
    attackers_link = api.start_connect(OTHER_FIRM)
    api.sim.set_consenting_user("Victim Admin", "admin@victim.example")
    sent_back_to_the_victim = api.consent(attackers_link)

    as_the_victim = api.callback(sent_back_to_the_victim, FIRM)

    _assert_refused(as_the_victim, 400, "OAUTH_STATE_INVALID")
    _assert_nothing_stored(api, OTHER_FIRM)
    _assert_nothing_stored(api, FIRM)


@pytest.mark.parametrize(
    "state",
    ["", "short", "b1946ac92492d2347c6235b4d2611184", "A" * 43, "x" * 500, "bad state with spaces" * 3],
)
def test_an_unknown_or_malformed_state_is_refused(api: ApiHarness, state: str) -> None:
    sent_back = api.consent(api.start_connect())
    sent_back["state"] = state

    answer = api.callback(sent_back)

    _assert_refused(answer, 400, "OAUTH_STATE_INVALID")
    _assert_nothing_stored(api)
    assert not api.sim.calls_to("/connect/token")


@pytest.mark.parametrize(
    "body",
    [
        {"code": "c"},
        {"code": "c", "state": None},
        {"code": "c", "state": 42},
        {"code": "c", "state": ["s" * 43]},
        {"error": "access_denied"},
        {},
    ],
)
def test_a_callback_without_a_state_is_refused_as_any_state_not_issued_to_the_caller(
    api: ApiHarness, body: dict[str, Any]
) -> None:
    # SPEC B4/B5: the callback's one answer for a state that is not the caller's is 400
    # OAUTH_STATE_INVALID; no state at all (or one that is not text) is no different. Until
    # 2026-12-07 these were 422 INVALID_FIELD naming state, an answer B5 does not list.
    sent = api.start_connect()

    answer = api.call_oauth("callback", claims=admin_claims(), body=body)

    _assert_refused(answer, 400, "OAUTH_STATE_INVALID")
    _assert_nothing_stored(api)
    assert not api.sim.calls_to("/connect/token")
    assert api.callback(api.consent(sent)).status == 200, "the admin's own state is still good"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"state": "s" * 43}, "code"),
        ({"code": "", "state": "s" * 43}, "code"),
        ({"code": "c" * 2049, "state": "s" * 43}, "code"),
        ({"code": ["c"], "state": "s" * 43}, "code"),
    ],
)
def test_a_callback_body_without_a_usable_code_names_the_field(
    api: ApiHarness, body: dict[str, Any], field: str
) -> None:
    api.start_connect()

    answer = api.call_oauth("callback", claims=admin_claims(), body=body)

    _assert_refused(answer, 422, "INVALID_FIELD")
    assert answer.json["error"]["field"] == field
    _assert_nothing_stored(api)


def test_an_expired_state_is_refused_even_before_dynamodb_deletes_it(api: ApiHarness) -> None:
    sent_back = api.consent(api.start_connect())
    api.clock.advance(10 * 60 + 1)

    answer = api.callback(sent_back)

    _assert_refused(answer, 400, "OAUTH_STATE_INVALID")
    _assert_nothing_stored(api)


def test_a_state_within_its_ten_minutes_is_good(api: ApiHarness) -> None:
    sent_back = api.consent(api.start_connect())
    api.clock.advance(10 * 60 - 5)

    assert api.callback(sent_back).status == 200


def test_a_state_can_be_used_once(api: ApiHarness) -> None:
    sent_back = api.consent(api.start_connect())
    assert api.callback(sent_back).status == 200
    secret_before = api.secret()

    replay = api.callback(sent_back)

    _assert_refused(replay, 400, "OAUTH_STATE_INVALID")
    assert api.secret() == secret_before


def test_the_callers_state_decides_nothing_but_their_own_firm(api: ApiHarness) -> None:
    api.callback(api.consent(api.start_connect(OTHER_FIRM)), OTHER_FIRM)

    assert api.secret(OTHER_FIRM) is not None
    assert api.secret(FIRM) is None


# --- Xero's own answers ---------------------------------------------------------------------------


def test_consent_denied_at_xero_burns_the_state_and_stores_nothing(api: ApiHarness) -> None:
    api.sim.faults.add("deny_consent")
    sent_back = api.consent(api.start_connect())
    assert sent_back["error"] == "access_denied"

    answer = api.callback(sent_back)

    _assert_refused(answer, 400, "XERO_CONSENT_DENIED")
    _assert_nothing_stored(api)
    # The state is burnt: the same state cannot be used later with a code.
    replay = api.callback({"code": "anything", "state": sent_back["state"]})
    _assert_refused(replay, 400, "OAUTH_STATE_INVALID")
    assert not api.sim.calls_to("/connect/token")


def test_a_consent_error_with_someone_elses_state_burns_nothing(api: ApiHarness) -> None:
    sent_back = api.consent(api.start_connect())

    denied = api.callback({"error": "access_denied", "state": sent_back["state"]}, OTHER_FIRM)

    _assert_refused(denied, 400, "OAUTH_STATE_INVALID")
    assert api.callback(sent_back).status == 200


def test_another_error_from_xero_is_reported_without_echoing_it(api: ApiHarness) -> None:
    state = _query(api.start_connect())["state"]

    answer = api.callback({"error": "<script>alert(1)</script>", "state": state})

    _assert_refused(answer, 400, "XERO_CONSENT_DENIED")
    assert "script" not in answer.text
    _assert_nothing_stored(api)


def test_an_empty_error_from_xero_is_a_refused_consent_and_burns_the_state(api: ApiHarness) -> None:
    state = _query(api.start_connect())["state"]

    answer = api.callback({"error": "", "state": state})

    _assert_refused(answer, 400, "XERO_CONSENT_DENIED")
    _assert_nothing_stored(api)
    replay = api.callback({"code": "anything", "state": state})
    _assert_refused(replay, 400, "OAUTH_STATE_INVALID")


def test_an_empty_error_beside_xeros_code_is_no_error(api: ApiHarness) -> None:
    sent_back = api.consent(api.start_connect())

    answer = api.callback({**sent_back, "error": ""})

    assert answer.status == 200, answer.json
    assert answer.json["status"] == "connected"


def test_a_failed_code_exchange_is_502_and_stores_nothing(api: ApiHarness) -> None:
    sent_back = api.consent(api.start_connect())
    api.sim.faults.add("invalid_grant")

    answer = api.callback(sent_back)

    _assert_refused(answer, 502, "XERO_UNAVAILABLE")
    _assert_nothing_stored(api)


def test_a_code_that_xero_does_not_know_is_502_and_stores_nothing(api: ApiHarness) -> None:
    sent_back = api.consent(api.start_connect())
    sent_back["code"] = "not-a-code-xero-issued"

    _assert_refused(api.callback(sent_back), 502, "XERO_UNAVAILABLE")
    _assert_nothing_stored(api)


def test_xero_unavailable_during_the_exchange_is_502_not_500(api: ApiHarness) -> None:
    sent_back = api.consent(api.start_connect())
    api.sim.faults.add("unavailable", path="/connect/token")

    answer = api.callback(sent_back)

    _assert_refused(answer, 502, "XERO_UNAVAILABLE")
    _assert_nothing_stored(api)


def test_connections_failing_after_the_exchange_revokes_the_unused_grant_and_stores_nothing(
    api: ApiHarness,
) -> None:
    sent_back = api.consent(api.start_connect())
    api.sim.faults.add("unavailable", path="/connections")

    answer = api.callback(sent_back)

    _assert_refused(answer, 502, "XERO_UNAVAILABLE")
    _assert_nothing_stored(api)
    # The grant just issued is stored nowhere, so it is ended at Xero rather than left alive.
    assert [grant.revoked for grant in api.sim.identity.grants] == [True]


def test_a_storage_failure_is_a_500_that_revokes_the_new_grant(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent_back = api.consent(api.start_connect())

    def refuse(*_: object) -> None:
        raise TokenStoreError("could not write secret xpm-sync-local/firm/firm-a: AccessDeniedException")

    monkeypatch.setattr(TokenStore, "save", refuse)

    answer = api.callback(sent_back)

    _assert_refused(answer, 500, "INTERNAL_ERROR")
    assert (api.config_item() or {}).get("status", "not_connected") == "not_connected"
    assert [grant.revoked for grant in api.sim.identity.grants] == [True]


# --- SPEC A6: what a consent leaves behind -----------------------------------------------------------


def test_a_consent_without_practice_manager_is_refused_revoked_and_leaves_the_firm_as_it_was(
    api: ApiHarness,
) -> None:
    api.connect()
    api.seed_office("SYD")
    api.seed_user("user-admin-1")
    api.update_config(default_office_code="SYD", notification_user_id="user-admin-1", sync_enabled=True)
    config_before, secret_before = api.config(), api.secret()
    organisation = api.sim.add_organisation("Demo Company (AU)")
    api.sim.consent_to([organisation])

    # A new name sent with the refused consent is not kept either.
    answer = api.callback(api.consent(api.start_connect(sync_name="Renamed sync")))

    _assert_refused(answer, 422, "NO_PRACTICE_MANAGER")
    assert api.config() == config_before
    assert api.secret() == secret_before
    first, refused = api.sim.identity.grants
    assert refused.revoked, "the new grant is ended at Xero"
    assert not first.revoked, "the firm's connection stands"
    assert api.call_api("get_tenants").status == 200


def test_a_first_consent_without_practice_manager_stores_nothing(api: ApiHarness) -> None:
    api.sim.consent_to([])

    answer = api.callback(api.consent(api.start_connect()))

    _assert_refused(answer, 422, "NO_PRACTICE_MANAGER")
    _assert_nothing_stored(api)
    assert [grant.revoked for grant in api.sim.identity.grants] == [True]


def test_several_practice_manager_tenants_preselect_none(api: ApiHarness) -> None:
    api.sim.add_practice(generate_practice(seed=2, staff=3, clients=3, problem_share=0))

    answer = api.connect()

    assert answer.json["tenant_id"] is None
    assert "tenant_id" not in api.config()


def test_a_reconnect_with_several_tenants_preselects_none_and_pauses_the_hourly_sync(
    api: ApiHarness,
) -> None:
    _connected_with_the_hourly_sync_on(api)
    assert api.config()["tenant_id"] == api.sim.practices[0].tenant_id
    api.sim.add_practice(generate_practice(seed=2, staff=3, clients=3, problem_share=0))

    answer = api.connect()

    assert answer.json["sync_enabled"] is False
    config = api.config()
    assert "tenant_id" not in config
    assert "tenant_name" not in config
    assert config["status"] == "connected"
    assert config["sync_enabled"] is False


def test_a_reconnect_to_the_same_single_tenant_keeps_the_hourly_sync(api: ApiHarness) -> None:
    _connected_with_the_hourly_sync_on(api)

    api.connect()

    assert api.config()["sync_enabled"] is True


def test_a_reconnect_owes_no_email_for_the_connection_it_replaces(api: ApiHarness) -> None:
    # The probe of 2026-12-07 (night): the notice a lost connection owed outlived the reconnect,
    # and a later loss found by the API emailed about the old run
    _connected_with_the_hourly_sync_on(api)
    api.update_config(status="needs_reconnect", reconnect_notice_run_id="20260302T090000Z-lost")

    api.connect()

    item = api.config_item()
    assert item is not None
    assert item["status"] == "connected"
    assert "reconnect_notice_run_id" not in item


def test_a_reconnect_that_brings_another_single_practice_preselects_it_and_pauses(api: ApiHarness) -> None:
    """The probe of 2026-12-07 (evening): another Xero user reconnected with one other practice,
    and the hourly sync filled Active with its clients with nobody choosing it."""
    api.connect()
    api.set_up("SYD")
    assert api.call_api("post_sync").status == 202
    other = generate_practice(seed=2, staff=3, clients=3, problem_share=0)
    api.sim.add_practice(other)
    api.sim.consent_to([other.tenant_id])

    answer = api.connect()

    assert (answer.json["tenant_id"], answer.json["sync_enabled"]) == (other.tenant_id, False)
    api.update_config(run_pending=False, manual_requested_at=None)  # past Start Sync's cooldown
    assert api.call_api("post_sync").status == 202, "the admin's Start Sync confirms it"


def test_a_reconnect_whose_config_cannot_be_written_keeps_the_grant_it_stored(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reviews of 2026-12-07 (evening): the new grant, already in the secret, was revoked as if
    never stored, and the firm broke; then the replaced one stayed alive, stored nowhere."""
    api.connect()
    write = ConfigRepository.update

    def refuse_the_connected_write(repository: ConfigRepository, firm_id: str, **values: Any) -> None:
        if values.get("status") == "connected":
            raise TokenStoreError("DynamoDB is throttling")
        write(repository, firm_id, **values)

    monkeypatch.setattr(ConfigRepository, "update", refuse_the_connected_write)
    answer = api.callback(api.consent(api.start_connect()))
    monkeypatch.setattr(ConfigRepository, "update", write)

    assert answer.status == 500
    assert [grant.revoked for grant in api.sim.identity.grants] == [True, False], "the replaced one ends"
    assert api.call_api("get_tenants").status == 200, "the stored grant works"


@pytest.mark.parametrize(
    ("secret_readable", "revoked"),
    [(True, [True, False]), (False, [False, False])],
    ids=["the secret says it landed", "the secret cannot be read"],
)
def test_a_reconnect_whose_secret_write_landed_without_an_answer_keeps_it(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch, secret_readable: bool, revoked: list[bool]
) -> None:
    """Reviews of 2026-12-07 (evening): the grant that landed was revoked (the firm broke), then
    kept while the one it replaced stayed alive, stored nowhere. Read back, the secret says which
    grant is the firm's: the replaced one ends; unreadable, neither does (the admin's retry
    replaces whichever is stored)."""
    api.connect()
    write, load = TokenStore._write, TokenStore.load

    def lands_then_fails(store: TokenStore, *args: Any, **kwargs: Any) -> None:
        write(store, *args, **kwargs)
        if not secret_readable:
            monkeypatch.setattr(TokenStore, "load", unreadable)
        raise TokenStoreError("the answer was lost")

    def unreadable(store: TokenStore, firm_id: str) -> None:
        raise TokenStoreError("Secrets Manager is not answering")

    monkeypatch.setattr(TokenStore, "_write", lands_then_fails)
    answer = api.callback(api.consent(api.start_connect()))
    monkeypatch.setattr(TokenStore, "_write", write)
    monkeypatch.setattr(TokenStore, "load", load)

    assert answer.status == 500
    assert [grant.revoked for grant in api.sim.identity.grants] == revoked
    assert api.call_api("get_tenants").status == 200


def test_the_config_is_written_under_the_grants_lease_and_disconnect_holds_it(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe of 2026-12-07 (evening): two connects, or a connect and a Disconnect, finishing
    together left the config describing one grant and the secret holding another (or none). Each
    now holds the grant's lease from storing the grant to describing it, and Disconnect throughout."""
    lease = {"firm_id": f"{LOCK_KEY_PREFIX}{FIRM}"}
    held_when: dict[str, bool] = {}
    config_table = boto3.resource("dynamodb").Table(api.names.config_table)
    write = ConfigRepository.update

    def update(repository: ConfigRepository, firm_id: str, **values: Any) -> None:
        if values.get("status") in ("connected", "disconnected"):
            held_when[values["status"]] = "Item" in config_table.get_item(Key=lease)
        write(repository, firm_id, **values)

    monkeypatch.setattr(ConfigRepository, "update", update)

    api.connect()
    assert api.call_api("delete_config").status == 200

    assert held_when == {"connected": True, "disconnected": True}
    assert "Item" not in config_table.get_item(Key=lease), "given back"


def test_a_reconnect_revokes_the_grant_it_replaces(api: ApiHarness) -> None:
    api.connect()
    replaced_refresh_token = api.tokens()["refresh_token"]

    api.connect()

    replaced, current = api.sim.identity.grants
    assert replaced.revoked
    assert not current.revoked
    assert api.tokens()["refresh_token"] != replaced_refresh_token
    assert api.call_api("get_tenants").status == 200


def test_a_reconnect_whose_revocation_fails_still_connects(api: ApiHarness) -> None:
    api.connect()
    api.sim.faults.add("unavailable", path="/connect/revocation")

    answer = api.connect()

    assert answer.json["status"] == "connected"
    assert [grant.revoked for grant in api.sim.identity.grants] == [False, False]


def test_callback_ignores_organisations_that_are_not_practice_manager(api: ApiHarness) -> None:
    api.sim.add_organisation("Demo Company (AU)")

    api.connect()

    assert api.config()["tenant_id"] == api.sim.practices[0].tenant_id


# --- nothing secret anywhere -----------------------------------------------------------------------


def test_no_token_code_state_or_verifier_ever_reaches_a_response_or_the_logs(
    api: ApiHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    # The logger's lines at DEBUG, where they go (its handler keeps the stdout it started with, so
    # capsys alone never sees them: the probe of 2026-12-07 (night) found this test blind to logs)
    with powertools_json_log(logging.DEBUG) as log:
        authorize_url = api.start_connect()
        verifier = (_state_item(api, _query(authorize_url)["state"]) or {})["code_verifier"]
        sent_back = api.consent(authorize_url)
        api.callback(sent_back)
        api.callback(sent_back)
    secret = api.secret()
    assert secret is not None

    captured = capsys.readouterr()
    logged = log.getvalue() + captured.out + captured.err
    assert log.getvalue().strip(), "the logger's lines were captured"
    seen = logged + "".join(a.text + str(a.headers) for a in api.answers)
    for value in (secret["access_token"], secret["refresh_token"], sent_back["code"], verifier):
        assert value not in seen
    # The state is in the authorize URL connect answers (that is its job), and nowhere else.
    assert sent_back["state"] not in logged
    assert sent_back["state"] not in "".join(a.text for a in api.answers[1:])
