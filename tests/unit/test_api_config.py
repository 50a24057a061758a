"""SPEC A6 / B4 / B5: reading and saving the firm's setup, and the Practice Manager tenants.

Given a firm connected through the simulator and an Active table with its office and users; when
the admin reads or submits the setup page; then every value is checked against what exists.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from xpm_sync.adapters import aws
from xpm_sync.adapters.config_table import ConfigRepository

from local.xpm_sim import generate_practice
from tests.fixtures.api import FIRM, OTHER_FIRM, ApiHarness, admin_claims
from tests.fixtures.events import load_event


@pytest.fixture
def firm(api: ApiHarness) -> ApiHarness:
    """Firm A connected, with office SYD and two users; firm B has its own office and user."""
    api.seed_office("SYD")
    api.seed_user("user-partner-1")
    api.seed_user("user-admin-1")
    api.seed_office("MEL", firm_id=OTHER_FIRM)
    api.seed_user("user-b-1", firm_id=OTHER_FIRM)
    api.connect()
    return api


def _body(api: ApiHarness, **changes: Any) -> dict[str, Any]:
    body = api.setup_body("SYD", **({"default_partner_user_id": "user-partner-1"} | changes))
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP: Any = object()


# --- GET /integrations/xpm ----------------------------------------------------------------------


def test_a_firm_that_never_connected_reads_not_connected(api: ApiHarness) -> None:
    answer = api.call_api("get_config")

    assert answer.status == 200
    assert answer.json["status"] == "not_connected"
    assert answer.json["firm_id"] == FIRM
    assert answer.json["connected_by"] is None
    assert answer.json["last_run"] is None


def test_the_config_shows_who_connected_and_when_but_never_tokens(firm: ApiHarness) -> None:
    answer = firm.call_api("get_config")

    assert answer.status == 200
    body = answer.json
    assert body["status"] == "connected"
    assert body["connected_by"] == {"name": "Pat Partner", "email": "pat@firm-a.example"}
    assert body["connected_at"].endswith("Z")
    assert body["tenant_id"] == firm.sim.practices[0].tenant_id
    assert body["sync_name"] == "XPM Sync"
    secret = firm.secret()
    assert secret is not None
    for value in (secret["access_token"], secret["refresh_token"]):
        assert value not in answer.text
    assert "token" not in " ".join(body)


def test_a_firm_reads_only_its_own_config(firm: ApiHarness) -> None:
    answer = firm.call_api("get_config", claims=admin_claims(OTHER_FIRM))

    assert answer.json["status"] == "not_connected"
    assert answer.json["firm_id"] == OTHER_FIRM


# --- GET /integrations/xpm/tenants --------------------------------------------------------------


def test_tenants_lists_the_practice_manager_connections(firm: ApiHarness) -> None:
    extra = generate_practice(seed=7, staff=2, clients=2, problem_share=0)
    firm.sim.add_practice(extra)
    firm.sim.add_organisation("Demo Company (AU)")

    answer = firm.call_api("get_tenants")

    assert answer.status == 200
    tenants = {t["tenant_id"]: t["tenant_name"] for t in answer.json["tenants"]}
    assert set(tenants) == {firm.sim.practices[0].tenant_id, extra.tenant_id}


def test_tenants_needs_a_connection(api: ApiHarness) -> None:
    answer = api.call_api("get_tenants")

    assert answer.status == 409
    assert answer.json == {
        "error": {"code": "NOT_CONNECTED", "message": "Connect to Xero Practice Manager first."}
    }


def test_tenants_after_xero_revoked_the_grant_asks_to_reconnect(firm: ApiHarness) -> None:
    firm.sim.revoke_all()

    answer = firm.call_api("get_tenants")

    assert answer.status == 409
    # B5 has one code for "no working connection"; the message says to connect again.
    assert answer.json["error"]["code"] == "NOT_CONNECTED"
    assert "again" in answer.json["error"]["message"]
    assert firm.config()["status"] == "needs_reconnect"
    # The probe of 2026-12-07 (night): the firm's runs stopped with no run-level entry, no open
    # problem and no email; the worker is now asked to record the loss as a run would (SPEC A8)
    [queued] = firm.queued()
    assert queued == {
        "firm_id": FIRM,
        "trigger": "schedule",
        "lost_connection": True,
        "grant_id": firm.config()["grant_id"],
    }


@pytest.mark.parametrize("case", ["get_tenants", "put_config", "post_sync"])
def test_a_firm_that_must_reconnect_is_409_not_connected(firm: ApiHarness, case: str) -> None:
    firm.update_config(status="needs_reconnect")
    body = _body(firm) if case == "put_config" else None

    answer = firm.call_api(case, body=body) if body else firm.call_api(case)

    assert answer.status == 409
    assert answer.json["error"]["code"] == "NOT_CONNECTED"
    assert "connect to Xero Practice Manager again" in answer.json["error"]["message"]
    assert set(answer.json) == {"error"}
    assert firm.queued() == []


def test_tenants_when_xero_is_down_is_a_502_in_the_error_shape(firm: ApiHarness) -> None:
    firm.sim.faults.add("unavailable", path="/connections")

    answer = firm.call_api("get_tenants")

    assert answer.status == 502
    assert answer.json["error"]["code"] == "XERO_UNAVAILABLE"


# --- PUT /integrations/xpm ----------------------------------------------------------------------


def test_put_ensures_sync_enabled_exists_and_keeps_its_value(firm: ApiHarness) -> None:
    table = aws.table(firm.names.config_table)
    table.update_item(Key={"firm_id": FIRM}, UpdateExpression="REMOVE sync_enabled")

    answer = firm.call_api("put_config", body=_body(firm))

    assert answer.status == 200
    assert firm.config()["sync_enabled"] is False
    ConfigRepository(table).update(FIRM, sync_enabled=True)
    assert firm.call_api("put_config", body=_body(firm)).status == 200
    assert firm.config()["sync_enabled"] is True


def test_put_saves_the_setup_and_writes_the_default_partner_on_the_office(firm: ApiHarness) -> None:
    answer = firm.call_api("put_config", body=_body(firm, sync_name="  Renamed  "))

    assert answer.status == 200
    body = answer.json
    assert body["sync_name"] == "Renamed"
    assert body["default_office_code"] == "SYD"
    assert body["default_partner_user_id"] == "user-partner-1"
    assert body["notification_user_id"] == "user-admin-1"
    assert body["tenant_name"] == firm.sim.practices[0].tenant_name
    assert firm.active("OFFICE#SYD")["default_partner_user_id"] == "user-partner-1"
    config = firm.config()
    assert config["default_office_code"] == "SYD"
    assert config["notification_user_id"] == "user-admin-1"


def test_put_takes_the_tenant_id_in_any_case_and_keeps_xeros_spelling(firm: ApiHarness) -> None:
    tenant_id = firm.sim.practices[0].tenant_id
    typed = tenant_id.upper() if tenant_id != tenant_id.upper() else tenant_id.lower()

    answer = firm.call_api("put_config", body=_body(firm, tenant_id=typed))

    assert answer.status == 200, answer.json
    assert answer.json["tenant_id"] == tenant_id
    assert firm.config()["tenant_id"] == tenant_id


def test_put_is_later_it_queues_nothing_and_does_not_enable_the_schedule(firm: ApiHarness) -> None:
    firm.call_api("put_config", body=_body(firm))

    assert firm.queued() == []
    assert firm.config().get("sync_enabled", False) is False


def test_put_without_a_default_partner_leaves_the_office_alone(firm: ApiHarness) -> None:
    firm.seed_office("SYD", default_partner_user_id="user-admin-1")

    answer = firm.call_api("put_config", body=_body(firm, default_partner_user_id=_DROP))

    assert answer.status == 200
    assert answer.json["default_partner_user_id"] == "user-admin-1"


def test_put_with_a_null_default_partner_clears_the_offices_default_partner(firm: ApiHarness) -> None:
    firm.seed_office("SYD", default_partner_user_id="user-admin-1", name="Sydney", notes="kept")

    answer = firm.call_api("put_config", body=_body(firm, default_partner_user_id=None))

    assert answer.status == 200, answer.text
    assert answer.json["default_partner_user_id"] is None
    office = firm.active("OFFICE#SYD")
    assert "default_partner_user_id" not in office
    assert (office["name"], office["notes"]) == ("Sydney", "kept"), "only the Default Partner changes"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"default_office_code": "NOPE"}, "default_office_code"),
        ({"default_office_code": "MEL"}, "default_office_code"),  # firm B's office
        ({"default_partner_user_id": "ghost"}, "default_partner_user_id"),
        ({"notification_user_id": "ghost"}, "notification_user_id"),
        ({"notification_user_id": "user-b-1"}, "notification_user_id"),  # firm B's user
        ({"tenant_id": "00000000-0000-0000-0000-000000000000"}, "tenant_id"),
    ],
)
def test_put_names_the_field_whose_value_does_not_exist(
    firm: ApiHarness, changes: dict[str, Any], field: str
) -> None:
    before = firm.config_item()

    answer = firm.call_api("put_config", body=_body(firm, **changes))

    assert answer.status == 422
    assert answer.json["error"]["code"] == "INVALID_FIELD"
    assert answer.json["error"]["field"] == field
    assert field in answer.json["error"]["message"]
    assert firm.config_item() == before
    assert "default_partner_user_id" not in firm.active("OFFICE#SYD")


def test_put_refuses_a_tenant_that_is_an_accounting_organisation(firm: ApiHarness) -> None:
    org = firm.sim.add_organisation("Demo Company (AU)")

    answer = firm.call_api("put_config", body=_body(firm, tenant_id=org))

    assert answer.status == 422
    assert answer.json["error"]["field"] == "tenant_id"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tenant_id": _DROP}, "tenant_id"),
        ({"sync_name": _DROP}, "sync_name"),
        ({"default_office_code": _DROP}, "default_office_code"),
        ({"notification_user_id": _DROP}, "notification_user_id"),
        ({"tenant_id": 12345}, "tenant_id"),
        ({"default_office_code": ["SYD"]}, "default_office_code"),
        ({"notification_user_id": None}, "notification_user_id"),
        ({"default_partner_user_id": 7}, "default_partner_user_id"),
        ({"sync_name": ""}, "sync_name"),
        ({"default_office_code": "X" * 33}, "default_office_code"),
    ],
)
def test_put_names_a_missing_or_wrongly_typed_field(
    firm: ApiHarness, changes: dict[str, Any], field: str
) -> None:
    answer = firm.call_api("put_config", body=_body(firm, **changes))

    assert answer.status == 422
    assert answer.json["error"]["field"] == field
    assert field in answer.json["error"]["message"]


@pytest.mark.parametrize("body", ["{not json", "", None, "  \n", "tenant_id=abc"])
def test_put_with_a_body_that_is_not_json_is_400(firm: ApiHarness, body: str | None) -> None:
    answer = firm.call_api("put_config", body=body)

    assert answer.status == 400
    assert answer.json["error"]["code"] == "INVALID_JSON"


@pytest.mark.parametrize("body", [[1, 2], "null", "42"])
def test_put_with_json_that_is_not_an_object_names_the_body(firm: ApiHarness, body: Any) -> None:
    # JSON null was a 400 INVALID_JSON, as if no body had come (the probe of 2026-12-07, evening).
    answer = firm.call_api("put_config", body=body)

    assert answer.status == 422
    assert answer.json["error"] == {
        "code": "INVALID_FIELD",
        "message": "body must be a JSON object.",
        "field": "body",
    }


def test_put_with_an_array_of_a_valid_config_saves_nothing(firm: ApiHarness) -> None:
    before = firm.config()

    answer = firm.call_api("put_config", body=[_body(firm, sync_name="From an array")])

    assert answer.status == 422
    assert answer.json["error"] == {
        "code": "INVALID_FIELD",
        "message": "body must be a JSON object.",
        "field": "body",
    }
    assert firm.config() == before


# How the body may arrive: API Gateway sends text, or base64 with isBase64Encoded; browsers'
# fetch() labels a string body text/plain unless told otherwise; media types ignore case.
@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json; charset=utf-8"},
        {"content-type": "APPLICATION/JSON"},
        {"Content-Type": "text/plain;charset=UTF-8"},
        {"Content-Type": "application/merge-patch+json"},
        {},
    ],
)
def test_put_reads_a_json_body_whatever_json_content_type_labels_it(
    firm: ApiHarness, headers: dict[str, str]
) -> None:
    answer = firm.call_api("put_config", body=_body(firm, sync_name="Labelled"), headers=headers)

    assert answer.status == 200, answer.json
    assert firm.config()["sync_name"] == "Labelled"


def test_put_reads_a_base64_body(firm: ApiHarness) -> None:
    encoded = base64.b64encode(json.dumps(_body(firm, sync_name="Encoded")).encode()).decode()

    answer = firm.call_api("put_config", body=encoded, is_base64=True)

    assert answer.status == 200, answer.json
    assert firm.config()["sync_name"] == "Encoded"


def test_put_with_a_body_flagged_base64_that_is_not_is_400(firm: ApiHarness) -> None:
    answer = firm.call_api("put_config", body="!!! not base64 !!!", is_base64=True)

    assert answer.status == 400
    assert answer.json["error"]["code"] == "INVALID_JSON"


def test_put_reads_a_body_given_as_the_json_value_itself(firm: ApiHarness) -> None:
    event = load_event("api", "put_config")
    event["body"] = _body(firm, sync_name="Not encoded")  # a hand-built event, not API Gateway's text

    answer = firm.send_api(event)

    assert answer.status == 200, answer.json
    assert firm.config()["sync_name"] == "Not encoded"


@pytest.mark.parametrize(
    "content_type", ["text/csv", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_put_reads_a_json_body_whatever_type_labels_it(firm: ApiHarness, content_type: str) -> None:
    """SPEC B5 judges the body, not its label (this was 415, which B5 does not know)."""
    answer = firm.call_api(
        "put_config", body=_body(firm, sync_name="Labelled"), headers={"Content-Type": content_type}
    )

    assert answer.status == 200, answer.json
    assert firm.config()["sync_name"] == "Labelled"


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/csv"])
def test_put_with_a_body_that_is_not_json_whatever_its_type_is_400(
    firm: ApiHarness, content_type: str
) -> None:
    before = firm.config()

    answer = firm.call_api("put_config", body="a=1&b=2", headers={"Content-Type": content_type})

    assert answer.status == 400
    assert answer.json["error"]["code"] == "INVALID_JSON"
    assert firm.config() == before


def test_put_needs_a_connection(api: ApiHarness) -> None:
    api.seed_office("SYD")
    api.seed_user("user-partner-1")
    api.seed_user("user-admin-1")

    answer = api.call_api("put_config", body=_body(api))

    assert answer.status == 409
    assert answer.json["error"]["code"] == "NOT_CONNECTED"
    assert api.active("OFFICE#SYD").get("default_partner_user_id") is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sync_name": "Only a name"},
        {"sync_name": 42, "tenant_id": None},
        [],
        [{"sync_name": "x"}],
        "null",
    ],
)
def test_put_needs_a_connection_whatever_the_body_holds(api: ApiHarness, body: Any) -> None:
    # The probes of 2026-12-07: the body's 422 came before the connection's 409 (for an array, until
    # the evening's).
    answer = api.call_api("put_config", body=body)

    assert answer.status == 409, answer.text
    assert answer.json["error"]["code"] == "NOT_CONNECTED"
    assert api.config_item() is None


@pytest.mark.parametrize("body", [None, "", "  \n"], ids=["no body", "an empty body", "a blank body"])
def test_put_without_a_body_needs_a_connection(api: ApiHarness, body: str | None) -> None:
    # The probe of 2026-12-07 (evening): no body was 400 INVALID_JSON before the connection's 409,
    # which a body of {} or null already got. A connected firm's is still 400 (above).
    answer = api.call_api("put_config", body=body)

    assert answer.status == 409, answer.text
    assert answer.json["error"] == {
        "code": "NOT_CONNECTED",
        "message": "Connect to Xero Practice Manager first.",
    }
    assert api.config_item() is None


def test_put_with_a_body_that_is_not_json_is_400_connected_or_not(api: ApiHarness) -> None:
    answer = api.call_api("put_config", body="{not json")

    assert answer.status == 400
    assert answer.json["error"]["code"] == "INVALID_JSON"


def test_a_connected_firms_put_with_missing_values_is_still_422_naming_the_field(firm: ApiHarness) -> None:
    answer = firm.call_api("put_config", body={"sync_name": "Only a name"})

    assert answer.status == 422
    assert answer.json["error"]["field"] == "tenant_id"


def test_changing_the_tenant_starts_the_next_run_with_a_full_read(firm: ApiHarness) -> None:
    extra = generate_practice(seed=9, staff=2, clients=2, problem_share=0)
    firm.sim.add_practice(extra)
    firm.call_api("put_config", body=_body(firm))

    firm.update_config(
        last_completed_run_started_at="2026-01-01T00:00:00Z",
        last_full_read_started_at="2026-01-01T00:00:00Z",
        sync_state_id="old-practice",
    )

    answer = firm.call_api("put_config", body=_body(firm, tenant_id=extra.tenant_id))

    assert answer.status == 200
    config = firm.config()
    assert config["tenant_id"] == extra.tenant_id
    assert "last_full_read_started_at" not in config
    # That run did complete: SPEC A5's "no completed run for 3 hours" still counts from it.
    assert config["last_completed_run_started_at"] == "2026-01-01T00:00:00Z"
    # A run still going on the old practice can no longer write its state (SPEC A6).
    assert config["sync_state_id"] not in (None, "old-practice")


# --- A config item written before status existed (the probe of 2026-12-08) -------------------------


def _without_status(api: ApiHarness) -> None:
    """The firm's config item as a version before ``status`` wrote it: connected, by its tenant."""
    assert api.call_api("put_config", body=_body(api)).status == 200
    api.dynamodb.Table(api.names.config_table).update_item(
        Key={"firm_id": FIRM}, UpdateExpression="REMOVE #s", ExpressionAttributeNames={"#s": "status"}
    )
    assert api.call_api("get_config").json["status"] == "connected"


def test_saving_the_setup_of_a_firm_whose_config_predates_status_keeps_it_connected(firm: ApiHarness) -> None:
    """PUT ("Later") gave such an item ``status = not_connected``: Start Sync then answered 409 and
    the hourly dispatch left the firm out."""
    _without_status(firm)

    saved = firm.call_api("put_config", body=_body(firm))

    assert saved.status == 200, saved.text
    assert saved.json["status"] == "connected"
    assert firm.call_api("post_sync").status == 202


def test_pressing_connect_on_a_firm_whose_config_predates_status_leaves_it_connected(
    firm: ApiHarness,
) -> None:
    """SPEC A6: a consent refused (or never given) leaves the firm as it was; pressing Connect
    disconnected such a firm before Xero was even asked."""
    _without_status(firm)

    firm.start_connect()  # the admin then closes Xero's tab

    assert firm.call_api("get_config").json["status"] == "connected"
