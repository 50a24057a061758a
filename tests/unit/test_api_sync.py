"""SPEC A6 / B5: Start Sync (202, the 429 gate, 409 NOT_CONNECTED and NOT_CONFIGURED) and
Disconnect, which wins every race.

Given a connected firm whose setup is saved; when the admin presses Start Sync (once, twice, again
later) or Disconnect; then exactly the promised runs are queued and synced records stay.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import boto3
import httpx
import pytest
from xpm_sync.adapters import aws
from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.xero_identity import AccessDenied, IdentityUnreachable, XeroIdentity
from xpm_sync.domain.clock import SystemClock
from xpm_sync.domain.errors import NotConfigured
from xpm_sync.domain.runs import new_run_id

from local.xpm_sim import generate_practice
from tests.fixtures.api import FIRM, LOCAL_CLIENT_ID, OTHER_FIRM, Answer, ApiHarness, admin_claims


@pytest.fixture
def firm(api: ApiHarness) -> ApiHarness:
    api.connect()
    api.set_up("SYD")
    return api


def _finish_run(api: ApiHarness) -> None:
    """What the worker does when a run ends."""
    api.update_config(run_pending=False)


def test_start_sync_enables_the_schedule_and_queues_one_manual_run(firm: ApiHarness) -> None:
    answer = firm.call_api("post_sync")

    assert answer.status == 202
    assert answer.json == {"status": "queued", "sync_enabled": True}
    assert firm.queued() == [{"firm_id": FIRM, "trigger": "manual"}]
    config = firm.config()
    assert config["sync_enabled"] is True
    assert config["run_pending"] is True


def test_a_double_click_queues_one_run_and_answers_429_with_retry_after(firm: ApiHarness) -> None:
    first = firm.call_api("post_sync")
    second = firm.call_api("post_sync")

    assert first.status == 202
    assert second.status == 429
    assert second.json["error"]["code"] == "SYNC_TOO_SOON"
    assert second.json["retry_after"] >= 60
    assert second.json["error"]["retry_after"] == second.json["retry_after"]
    assert set(second.json["error"]) == {"code", "message", "retry_after"}
    assert second.headers["Retry-After"] == str(second.json["retry_after"])
    # Both proxy forms: a reader of the single-valued map finds it too.
    assert second.raw["headers"]["Retry-After"] == str(second.json["retry_after"])
    assert second.raw["multiValueHeaders"]["Retry-After"] == [str(second.json["retry_after"])]
    assert len(firm.queued()) == 1


def test_within_five_minutes_of_the_last_start_it_is_429_even_when_the_run_finished(firm: ApiHarness) -> None:
    firm.call_api("post_sync")
    _finish_run(firm)
    firm.clock.advance(100)

    answer = firm.call_api("post_sync")

    assert answer.status == 429
    assert 195 <= answer.json["retry_after"] <= 201
    assert len(firm.queued()) == 1


def test_after_five_minutes_and_a_finished_run_start_sync_works_again(firm: ApiHarness) -> None:
    firm.call_api("post_sync")
    _finish_run(firm)
    firm.clock.advance(5 * 60 + 1)

    answer = firm.call_api("post_sync")

    assert answer.status == 202
    # The config's clock moved 5 minutes and SQS's did not: as when the cooldown, kept to the
    # second, reopens just before SQS's 5-minute deduplication window closes. The run is queued.
    assert firm.queued() == [{"firm_id": FIRM, "trigger": "manual"}] * 2


def test_while_a_run_is_pending_start_sync_stays_429_after_five_minutes(firm: ApiHarness) -> None:
    firm.call_api("post_sync")
    firm.clock.advance(10 * 60)

    answer = firm.call_api("post_sync")

    assert answer.status == 429
    assert answer.json["retry_after"] == 60


def test_a_run_pending_for_hours_no_longer_blocks_start_sync(firm: ApiHarness) -> None:
    firm.call_api("post_sync")
    firm.clock.advance(7 * 3600)

    assert firm.call_api("post_sync").status == 202


def _scheduled_run_started(api: ApiHarness, hours_ago: float) -> str:
    """What the worker does when a (scheduled) run starts."""
    run_id = new_run_id(api.clock.now() - timedelta(hours=hours_ago))
    api.update_config(running_run_id=run_id)
    return run_id


def test_while_a_scheduled_run_is_running_start_sync_is_429(firm: ApiHarness) -> None:
    _scheduled_run_started(firm, hours_ago=0.5)

    answer = firm.call_api("post_sync")

    assert answer.status == 429
    assert answer.json["error"]["code"] == "SYNC_TOO_SOON"
    assert answer.json["retry_after"] == answer.json["error"]["retry_after"] >= 60
    assert answer.headers["Retry-After"] == str(answer.json["retry_after"])
    assert firm.queued() == []
    assert firm.config().get("run_pending") is not True


def test_when_the_running_run_ends_start_sync_works(firm: ApiHarness) -> None:
    _scheduled_run_started(firm, hours_ago=0.5)
    assert firm.call_api("post_sync").status == 429
    firm.update_config(running_run_id=None)

    assert firm.call_api("post_sync").status == 202


def test_a_run_marked_running_for_hours_no_longer_blocks_start_sync(firm: ApiHarness) -> None:
    _scheduled_run_started(firm, hours_ago=7)

    assert firm.call_api("post_sync").status == 202


def test_start_sync_needs_a_connection(api: ApiHarness) -> None:
    answer = api.call_api("post_sync")

    assert answer.status == 409
    assert answer.json["error"]["code"] == "NOT_CONNECTED"
    assert api.queued() == []
    assert api.config_item() is None


def test_start_sync_for_one_firm_does_not_block_another(firm: ApiHarness) -> None:
    firm.connect(OTHER_FIRM)
    firm.set_up("SYD", OTHER_FIRM)
    firm.call_api("post_sync")

    answer = firm.call_api("post_sync", claims=admin_claims(OTHER_FIRM))

    assert answer.status == 202
    assert sorted(m["firm_id"] for m in firm.queued()) == [FIRM, OTHER_FIRM]


# --- SPEC A6: NOT_CONFIGURED ---------------------------------------------------------------------


def _assert_not_configured(api: ApiHarness, answer: Answer, missing: list[str]) -> None:
    assert answer.status == 409, answer.text
    assert answer.json["error"]["code"] == "NOT_CONFIGURED"
    message = answer.json["error"]["message"]
    for name in ("tenant_id", "default_office_code", "notification_user_id"):
        assert (name in message) == (name in missing), message
    assert api.queued() == []
    config = api.config()
    assert config["sync_enabled"] is False, "nothing is enabled"
    assert config.get("run_pending") is not True
    assert "manual_requested_at" not in config


def test_start_sync_before_the_setup_is_submitted_is_409_not_configured_and_enables_nothing(
    api: ApiHarness,
) -> None:
    api.connect()  # one practice: the tenant is preselected

    answer = api.call_api("post_sync")

    _assert_not_configured(api, answer, ["default_office_code", "notification_user_id"])


def test_start_sync_after_a_reconnect_left_no_tenant_is_409_not_configured(firm: ApiHarness) -> None:
    firm.sim.add_practice(generate_practice(seed=3, staff=2, clients=2, problem_share=0))
    firm.connect()  # two practices now: none preselected

    answer = firm.call_api("post_sync")

    _assert_not_configured(firm, answer, ["tenant_id"])


def test_start_sync_of_a_firm_not_connected_is_409_not_connected_before_not_configured(
    api: ApiHarness,
) -> None:
    api.start_connect()  # a config item exists, with nothing set up

    answer = api.call_api("post_sync")

    assert answer.status == 409
    assert answer.json["error"]["code"] == "NOT_CONNECTED"


def test_the_start_sync_claim_itself_refuses_a_setup_that_lost_its_tenant(firm: ApiHarness) -> None:
    """A reconnect can clear the tenant between Start Sync's read and its write: the conditional
    write that enables the schedule checks the setup too."""
    configs = ConfigRepository(aws.table(firm.names.config_table))
    configs.update(FIRM, tenant_id=None)

    with pytest.raises(NotConfigured) as refused:
        configs.claim_manual_run(FIRM, SystemClock())

    assert refused.value.missing == ["tenant_id"]
    assert firm.config()["sync_enabled"] is False


def test_a_queue_failure_releases_the_gate(firm: ApiHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_QUEUE_URL", firm.names.queue_url + "-missing")

    failed = firm.call_api("post_sync")
    monkeypatch.setenv("SYNC_QUEUE_URL", firm.names.queue_url)
    retried = firm.call_api("post_sync")

    assert failed.status == 500
    assert failed.json["error"]["code"] == "INTERNAL_ERROR"
    assert retried.status == 202


# --- DELETE /integrations/xpm ---------------------------------------------------------------------


def test_disconnect_revokes_deletes_the_secret_and_stops_the_schedule(firm: ApiHarness) -> None:
    firm.seed_user("user-synced", email="synced@firm.example")
    firm.call_api("post_sync")
    refresh_token = firm.tokens()["refresh_token"]

    answer = firm.call_api("delete_config")

    assert answer.status == 200
    assert answer.json["status"] == "disconnected"
    assert answer.json["sync_enabled"] is False
    assert firm.secret() is None
    assert len(firm.sim.calls_to("/connect/revocation")) == 1
    assert refresh_token not in answer.text
    config = firm.config()
    assert config["status"] == "disconnected"
    assert config["sync_enabled"] is False
    assert firm.active_item("USER#user-synced") is not None


def test_a_config_written_before_status_existed_reads_connected_as_the_worker_does(firm: ApiHarness) -> None:
    aws.table(firm.names.config_table).update_item(
        Key={"firm_id": FIRM}, UpdateExpression="REMOVE #s", ExpressionAttributeNames={"#s": "status"}
    )

    read = firm.call_api("get_config")
    started = firm.call_api("post_sync")
    disconnected = firm.call_api("delete_config")

    assert read.json["status"] == "connected"
    assert started.status == 202
    assert disconnected.json["status"] == "disconnected"


def test_after_disconnect_the_routes_that_need_a_connection_answer_409(firm: ApiHarness) -> None:
    firm.call_api("delete_config")

    for case in ("post_sync", "get_tenants"):
        answer = firm.call_api(case)
        assert answer.status == 409, case
        assert answer.json["error"]["code"] == "NOT_CONNECTED"


@pytest.mark.parametrize("body", [[1], "null", "{}"])
def test_routes_that_read_no_body_ignore_the_one_sent(firm: ApiHarness, body: Any) -> None:
    """The probe of 2026-12-07 (evening): GET and DELETE with an array body answered 422, and the
    firm stayed connected; Start Sync of a disconnected firm with one answered 422, not 409."""
    assert firm.call_api("get_config", body=body).status == 200

    disconnected = firm.call_api("delete_config", body=body)

    assert disconnected.status == 200, disconnected.text
    assert firm.config()["status"] == "disconnected"
    for case in ("post_sync", "post_preview"):
        answer = firm.call_api(case, body=body)
        assert (answer.status, answer.json["error"]["code"]) == (409, "NOT_CONNECTED"), case


@pytest.mark.parametrize("body", ["not utf-8", "{not json", "hello", '"abc', "[" * 70, "NaN", "-Infinity"])
def test_a_body_the_api_cannot_read_is_400_on_every_route(firm: ApiHarness, body: str) -> None:
    """SPEC B5 refuses such a body whatever the route: Disconnect with one does not disconnect."""
    sent = base64.b64encode(b"\xff\xfe{not text").decode() if body == "not utf-8" else body
    for case in ("get_config", "delete_config", "post_sync", "post_preview"):
        answer = firm.call_api(case, body=sent, is_base64=body == "not utf-8")
        assert (answer.status, answer.json["error"]["code"]) == (400, "INVALID_JSON"), case
    assert firm.config()["status"] == "connected"


def test_disconnect_when_xero_already_revoked_the_grant_still_succeeds(firm: ApiHarness) -> None:
    firm.sim.revoke_all()

    answer = firm.call_api("delete_config")

    assert answer.status == 200
    assert firm.secret() is None


def test_a_disconnect_xero_cannot_complete_leaves_the_firm_as_it_was_for_a_retry(
    firm: ApiHarness,
) -> None:
    """Reviews of 2026-12-07 (evening): it read disconnected with the grant alive at Xero (nothing
    asked for the retry that would end it), then connected with its schedule silently off."""
    firm.call_api("post_sync")
    firm.sim.faults.add("unavailable", path="/connect/revocation")

    answer = firm.call_api("delete_config")

    assert answer.status == 502
    assert answer.json["error"]["code"] == "XERO_UNAVAILABLE"
    assert firm.secret() is not None
    assert (firm.config()["status"], firm.config()["sync_enabled"]) == ("connected", True)
    assert firm.call_api("delete_config").status == 200
    assert firm.secret() is None
    assert firm.config()["status"] == "disconnected"


def test_a_connect_stored_while_disconnect_revokes_is_ended_too(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of 2026-12-07 (evening): a callback that stored a new grant while Xero revoked the
    old one was left alive at Xero after the Disconnect deleted it (SPEC A6: Disconnect wins)."""
    sent_back = firm.consent(firm.start_connect())
    revoke = XeroIdentity.revoke
    landed: list[Answer] = []
    started: list[bool] = []

    def slow_revoke(identity: XeroIdentity, refresh_token: str) -> None:
        if not started:
            started.append(True)
            landed.append(firm.callback(sent_back))  # the admin's other tab finishes connecting
        revoke(identity, refresh_token)

    monkeypatch.setattr(XeroIdentity, "revoke", slow_revoke)

    assert firm.call_api("delete_config").status == 200

    assert [a.status for a in landed] == [200]
    assert firm.config()["status"] == "disconnected"
    assert firm.secret() is None
    assert all(grant.revoked for grant in firm.sim.identity.grants)


def test_a_failed_disconnect_leaves_a_connect_that_landed_meanwhile_as_it_is(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of 2026-12-07 (evening): undoing the failed Disconnect wrote the status it had
    read before (needs_reconnect) over the connect that finished while Xero was being asked."""
    firm.update_config(status="needs_reconnect")
    sent_back = firm.consent(firm.start_connect())
    started: list[bool] = []
    revoke = XeroIdentity.revoke

    def unreachable(identity: XeroIdentity, refresh_token: str) -> None:
        if not started:
            started.append(True)
            assert firm.callback(sent_back).status == 200
        raise IdentityUnreachable("Xero did not answer")

    monkeypatch.setattr(XeroIdentity, "revoke", unreachable)

    answer = firm.call_api("delete_config")

    assert answer.status == 502
    config = firm.config()
    assert config["status"] == "connected"
    assert firm.secret() is not None
    monkeypatch.setattr(XeroIdentity, "revoke", revoke)
    assert firm.call_api("get_tenants").status == 200, "the new connection works"


def test_a_connect_stored_while_disconnect_revokes_and_xero_then_unreachable_is_kept_for_a_retry(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of 2026-12-07 (evening): the second revoke's failure was swallowed and the secret
    deleted, leaving the new grant alive at Xero with nobody holding it."""
    sent_back = firm.consent(firm.start_connect())
    revoke = XeroIdentity.revoke
    calls: list[str] = []

    def first_then_unreachable(identity: XeroIdentity, refresh_token: str) -> None:
        calls.append(refresh_token)
        if len(calls) == 1:
            assert firm.callback(sent_back).status == 200  # the other tab, during the revoke
            return revoke(identity, refresh_token)
        if len(calls) == 2:
            return revoke(identity, refresh_token)  # the callback's own revoke of the grant it replaced
        raise IdentityUnreachable("Xero did not answer")

    monkeypatch.setattr(XeroIdentity, "revoke", first_then_unreachable)

    answer = firm.call_api("delete_config")

    assert answer.status == 502
    assert firm.secret() is not None
    assert [grant.revoked for grant in firm.sim.identity.grants] == [True, False]
    monkeypatch.setattr(XeroIdentity, "revoke", revoke)
    assert firm.call_api("delete_config").status == 200
    assert all(grant.revoked for grant in firm.sim.identity.grants)


def test_a_failed_disconnect_leaves_a_disconnect_that_succeeded_meanwhile_as_it_is(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of 2026-12-07 (evening): the first Disconnect, failing after a second had answered
    200, put the firm back to connected with its tokens deleted."""
    revoke = XeroIdentity.revoke
    calls: list[str] = []

    def second_disconnect_then_unreachable(identity: XeroIdentity, refresh_token: str) -> None:
        calls.append(refresh_token)
        if len(calls) == 1:
            assert firm.call_api("delete_config").status == 200  # the other tab's Disconnect
            raise IdentityUnreachable("Xero did not answer")
        revoke(identity, refresh_token)

    monkeypatch.setattr(XeroIdentity, "revoke", second_disconnect_then_unreachable)

    assert firm.call_api("delete_config").status == 502

    assert firm.config()["status"] == "disconnected"
    assert firm.secret() is None
    assert firm.call_api("post_sync").status == 409


def test_two_disconnects_xero_cannot_complete_leave_the_firm_as_it_was(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of 2026-12-07 (evening): the second's undo removed the first's attempt, so the
    first could not put the firm back: disconnected, with its grant alive and stored."""
    calls: list[str] = []

    def unreachable(identity: XeroIdentity, refresh_token: str) -> None:
        calls.append(refresh_token)
        if len(calls) == 1:
            assert firm.call_api("delete_config").status == 502  # the other tab, meanwhile
        raise IdentityUnreachable("Xero did not answer")

    monkeypatch.setattr(XeroIdentity, "revoke", unreachable)
    before = firm.config()

    assert firm.call_api("delete_config").status == 502

    config = firm.config()
    assert (config["status"], config["sync_enabled"]) == ("connected", before["sync_enabled"])
    assert "disconnect_attempt" not in config
    assert firm.secret() is not None


def test_a_failed_disconnect_does_not_put_back_a_pending_run_it_may_have_dropped(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of 2026-12-07 (evening): the queued run was dropped while the firm read
    disconnected, and the undo marked it pending again: Start Sync refused for hours."""
    assert firm.call_api("post_sync").status == 202
    firm.sim.faults.add("unavailable", path="/connect/revocation")

    assert firm.call_api("delete_config").status == 502

    assert firm.config()["run_pending"] is False


def test_a_disconnect_that_ends_leaves_no_attempt_behind(firm: ApiHarness) -> None:
    """A review of 2026-12-07 (evening): a later failed Disconnect overlapping it could match the
    attempt left on the item, and put the firm back to connected with no tokens."""
    assert firm.call_api("delete_config").status == 200

    assert "disconnect_attempt" not in firm.config()


def test_disconnect_when_xero_refuses_the_apps_credentials_still_disconnects(firm: ApiHarness) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId=firm.names.app_secret_id,
        SecretString=json.dumps({"client_id": LOCAL_CLIENT_ID, "client_secret": "rotated-at-xero-only"}),
    )

    answer = firm.call_api("delete_config")

    assert answer.status == 200
    assert answer.json["status"] == "disconnected"
    assert firm.secret() is None
    assert firm.config()["sync_enabled"] is False


def test_disconnect_when_xero_refuses_the_revocation_request_for_good_still_disconnects(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe of 2026-12-07: a 4xx such as unsupported_token_type answered 502 to every retry,
    and the firm stayed connected (schedule off) with its tokens kept alive by the keep-alive."""
    answered = httpx.Response(400, json={"error": "unsupported_token_type"})
    send = XeroIdentity._send

    def revocation_refused(identity: XeroIdentity, method: str, url: str, **request: Any) -> httpx.Response:
        return answered if url.endswith("/connect/revocation") else send(identity, method, url, **request)

    monkeypatch.setattr(XeroIdentity, "_send", revocation_refused)

    answer = firm.call_api("delete_config")

    assert answer.status == 200, answer.text
    assert answer.json["status"] == "disconnected"
    assert firm.secret() is None
    assert firm.config()["sync_enabled"] is False


def test_disconnect_of_a_firm_that_never_connected_is_harmless(api: ApiHarness) -> None:
    answer = api.call_api("delete_config")

    assert answer.status == 200
    assert answer.json["status"] == "not_connected"
    assert api.config_item() is None


# --- SPEC A6: Disconnect wins over every request racing it -------------------------------------------


def test_disconnect_wins_over_a_start_sync_that_lands_while_xero_revokes(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: with Xero slow to revoke, Start Sync's claim landed after Disconnect stopped the
    schedule and before it set the status; the firm ended disconnected with the schedule on. Since
    the probe of 2026-12-07 (evening) the status is set before Xero is asked: the claim is refused."""
    landed: list[Answer] = []
    revoke = XeroIdentity.revoke

    def slow_revoke(identity: XeroIdentity, refresh_token: str) -> None:
        landed.append(firm.call_api("post_sync"))  # the admin's other tab, while Xero thinks
        revoke(identity, refresh_token)

    monkeypatch.setattr(XeroIdentity, "revoke", slow_revoke)

    answer = firm.call_api("delete_config")

    assert [(a.status, a.json["error"]["code"]) for a in landed] == [(409, "NOT_CONNECTED")], (
        "Start Sync landed mid-disconnect"
    )
    assert answer.status == 200
    assert (answer.json["status"], answer.json["sync_enabled"], answer.json["run_pending"]) == (
        "disconnected",
        False,
        False,
    )
    config = firm.config()
    assert (config["status"], config["sync_enabled"], config["run_pending"]) == ("disconnected", False, False)
    monkeypatch.setattr(XeroIdentity, "revoke", revoke)
    assert firm.call_api("post_sync").json["error"]["code"] == "NOT_CONNECTED"


def test_disconnect_reads_disconnected_before_xero_is_asked_to_revoke(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe of 2026-12-07 (evening): a run meeting the grant Disconnect had just revoked
    found the firm still connected, marked it needs_reconnect and emailed the admin."""
    seen: list[str] = []
    revoke = XeroIdentity.revoke

    def revoke_and_look(identity: XeroIdentity, refresh_token: str) -> None:
        seen.append(firm.config()["status"])
        revoke(identity, refresh_token)

    monkeypatch.setattr(XeroIdentity, "revoke", revoke_and_look)

    assert firm.call_api("delete_config").status == 200

    assert seen == ["disconnected"]
    assert not ConfigRepository(aws.table(firm.names.config_table)).mark_needs_reconnect(
        FIRM, grant_id=firm.config().get("grant_id")
    ), "a run finding the grant refused now leaves the firm disconnected"


def test_a_put_that_loses_the_race_with_disconnect_answers_409_and_writes_nothing(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    firm.seed_user("user-partner-1")
    before = firm.config()
    connections = XeroIdentity.connections
    disconnected: list[Answer] = []

    def disconnect_meanwhile(identity: XeroIdentity, access_token: str) -> Any:
        # PUT checks the tenant at Xero; Disconnect completes while it waits for the answer.
        found = connections(identity, access_token)
        if not disconnected:
            disconnected.append(firm.call_api("delete_config"))
        return found

    monkeypatch.setattr(XeroIdentity, "connections", disconnect_meanwhile)
    body = firm.setup_body("SYD", sync_name="Renamed in the race", default_partner_user_id="user-partner-1")

    answer = firm.call_api("put_config", body=body)

    assert [a.status for a in disconnected] == [200]
    assert answer.status == 409, answer.text
    assert answer.json["error"]["code"] == "NOT_CONNECTED"
    config = firm.config()
    assert config["status"] == "disconnected"
    assert config["sync_name"] == before["sync_name"]
    assert "default_partner_user_id" not in firm.active("OFFICE#SYD")


@pytest.mark.parametrize("route", ["get_tenants", "put_config"])
def test_a_request_whose_tokens_xero_refuses_while_disconnect_completes_leaves_the_firm_disconnected(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """The probe of 2026-12-07: Disconnect revoked the tokens while GET tenants (or PUT) was asking
    Xero with them; Xero's refusal then marked the firm needs_reconnect over Disconnect's outcome."""
    firm.seed_user("user-partner-1")
    disconnected: list[Answer] = []

    def refused_after_disconnect(identity: XeroIdentity, access_token: str) -> Any:
        if not disconnected:
            disconnected.append(firm.call_api("delete_config"))
        raise AccessDenied("HTTP 401 from the connections endpoint")

    monkeypatch.setattr(XeroIdentity, "connections", refused_after_disconnect)
    body = firm.setup_body("SYD", default_partner_user_id="user-partner-1") if route == "put_config" else None

    answer = firm.call_api(route, body=body)

    assert [a.status for a in disconnected] == [200]
    assert answer.status == 409, answer.text
    assert answer.json["error"]["code"] == "NOT_CONNECTED"
    config = firm.config()
    assert (config["status"], config["sync_enabled"]) == ("disconnected", False)


def test_reconnecting_after_disconnect_works(firm: ApiHarness) -> None:
    firm.call_api("delete_config")

    firm.connect()

    assert firm.config()["status"] == "connected"
    assert firm.secret() is not None
