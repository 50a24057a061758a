"""SPEC B4 / B5: who may call, and the one error shape every answer uses.

Given each route's sample event; when the caller is not a firm's admin, or asks for a route that
does not exist; then the answer is a 4xx in B5's shape, never a 500, and carries the CORS origin.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from xpm_sync.api.caller import admin_caller, groups_of
from xpm_sync.domain.errors import NotAnAdmin, NotSignedIn

from tests.fixtures.api import ApiHarness
from tests.fixtures.events import load_event

API_CASES = ["get_config", "get_tenants", "put_config", "post_sync", "get_runs", "get_run", "delete_config"]


@pytest.mark.parametrize("case", API_CASES)
@pytest.mark.parametrize(
    ("claims", "status", "code"),
    [
        ({"cognito:groups": "staff"}, 403, "FORBIDDEN"),
        ({"cognito:groups": "administrators"}, 403, "FORBIDDEN"),
        ({"cognito:groups": None}, 403, "FORBIDDEN"),
        ({"custom:firm_id": None}, 403, "FORBIDDEN"),
        ({"custom:firm_id": "  "}, 403, "FORBIDDEN"),
        (None, 401, "UNAUTHORIZED"),
    ],
)
def test_only_a_firms_admin_reaches_any_route(
    api: ApiHarness, case: str, claims: dict[str, Any] | None, status: int, code: str
) -> None:
    answer = api.call_api(case, claims=claims)

    assert answer.status == status
    assert answer.json["error"]["code"] == code
    assert set(answer.json) == {"error"}
    assert api.queued() == []


@pytest.mark.parametrize(
    ("claims", "status"),
    [({"cognito:groups": "staff"}, 403), ({"custom:firm_id": None}, 403), (None, 401)],
)
@pytest.mark.parametrize(
    ("case", "overrides"),
    [
        ("put_config", {"body": "{not json"}),
        ("put_config", {"body": None}),
        ("put_config", {"body": {"sync_name": 42}}),
        ("put_config", {"headers": {"Content-Type": "text/csv"}}),
        ("get_runs", {"query": {"limit": "ten"}}),
        ("get_runs", {"query": {"cursor": "garbage"}}),
        ("get_run", {"path": "/integrations/xpm/runs/nope", "path_parameters": {"run_id": "nope"}}),
    ],
)
def test_who_is_calling_is_checked_before_the_request_is_validated(
    api: ApiHarness,
    claims: dict[str, Any] | None,
    status: int,
    case: str,
    overrides: dict[str, Any],
) -> None:
    answer = api.call_api(case, claims=claims, **overrides)

    assert answer.status == status
    assert set(answer.json) == {"error"}
    assert answer.json["error"]["code"] == ("FORBIDDEN" if status == 403 else "UNAUTHORIZED")
    assert answer.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    assert answer.raw["headers"]["Content-Type"] == "application/json"


def test_an_unknown_route_is_404_in_the_error_shape(api: ApiHarness) -> None:
    event_path = "/integrations/xpm/nothing-here"
    answer = api.call_api("get_config", path=event_path)

    assert answer.status == 404
    assert answer.json == {"error": {"code": "NOT_FOUND", "message": "No such route."}}


def test_a_wrong_content_type_is_415_not_500(api: ApiHarness) -> None:
    answer = api.call_api("put_config", headers={"Content-Type": "text/csv"})

    assert answer.status == 415
    assert answer.json["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_every_answer_lets_the_frontend_origin_read_it(api: ApiHarness) -> None:
    ok = api.call_api("get_config")
    refused = api.call_api("get_config", claims=None)

    for answer in (ok, refused):
        assert answer.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("admin", {"admin"}),
        ("admin,staff", {"admin", "staff"}),
        ("staff, admin", {"staff", "admin"}),
        ("[admin staff]", {"admin", "staff"}),
        ('["admin","staff"]', {"admin", "staff"}),
        ("['staff', 'admin']", {"staff", "admin"}),
        (["admin", "staff"], {"admin", "staff"}),
        ("", set()),
        (None, set()),
        (42, set()),
    ],
)
def test_groups_arrive_as_a_list_or_as_text(value: object, expected: set[str]) -> None:
    assert groups_of(value) == expected


def test_the_firm_comes_from_the_claims_alone() -> None:
    event = {
        "pathParameters": {"firm_id": "firm-b"},
        "queryStringParameters": {"firm_id": "firm-b"},
        "requestContext": {
            "authorizer": {"claims": {"sub": "u", "custom:firm_id": "firm-a", "cognito:groups": ["admin"]}}
        },
    }
    assert admin_caller(event).firm_id == "firm-a"


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"requestContext": None},
        {"requestContext": {"authorizer": "x"}},
        {"requestContext": {"authorizer": {}}},
        {"requestContext": {"authorizer": {"claims": {}}}},
    ],
)
def test_malformed_request_contexts_are_unauthorized(event: dict[str, Any]) -> None:
    with pytest.raises(NotSignedIn):
        admin_caller(event)


@pytest.mark.parametrize("case", API_CASES)
def test_the_firm_and_admin_group_claims_alone_reach_every_route(api: ApiHarness, case: str) -> None:
    # SPEC B4 names only these two claims; Cognito's others (sub, email, ...) are not required.
    answer = api.call_api(case, claims={"sub": None, "email": None, "cognito:username": None})

    assert answer.status not in (401, 403), answer.json


def test_a_non_admin_is_forbidden() -> None:
    event = {"requestContext": {"authorizer": {"claims": {"sub": "u", "custom:firm_id": "f"}}}}
    with pytest.raises(NotAnAdmin):
        admin_caller(event)


def test_a_body_that_is_not_utf8_is_400(api: ApiHarness) -> None:
    event_body = base64.b64encode(b"\xff\xfe{not text").decode()
    answer = api.call_api("put_config", body=event_body, is_base64=True)

    assert answer.status == 400
    assert answer.json["error"]["code"] == "INVALID_JSON"


@pytest.mark.parametrize("content_type", ["multipart/form-data", "application/x-www-form-urlencoded"])
def test_a_form_body_is_415_not_500(api: ApiHarness, content_type: str) -> None:
    answer = api.call_api("put_config", body="a=1", headers={"Content-Type": content_type})

    assert answer.status == 415
    assert answer.json["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize("prefix", ["/Prod", "/v1"])
def test_a_stage_or_base_path_before_the_route_still_reaches_it(api: ApiHarness, prefix: str) -> None:
    # A custom domain's base path mapping, or a caller that copied the stage into the path.
    answer = api.call_api("get_config", path=f"{prefix}/integrations/xpm")
    callback = api.call_oauth("callback", query={"code": "c", "state": "s"})
    callback_event = load_event("oauth", "callback", query={"code": "c", "state": "s"})
    callback_event["path"] = f"{prefix}/integrations/xpm/callback"
    prefixed_callback = api.send_oauth(callback_event)

    assert answer.status == 200
    assert answer.json["status"] == "not_connected"
    assert prefixed_callback.status == callback.status == 302
    assert prefixed_callback.location_query == {"error": "invalid_state"}


def test_an_event_with_only_the_request_contexts_path_and_method_is_routed(api: ApiHarness) -> None:
    event = load_event("api", "get_config")
    del event["path"], event["httpMethod"]

    answer = api.send_api(event)

    assert answer.status == 200
    assert answer.json["status"] == "not_connected"


def test_every_answer_carries_headers_in_both_proxy_forms(api: ApiHarness) -> None:
    answers = [api.call_api("get_config"), api.call_api("get_config", claims=None)]
    answers.append(api.callback({"code": "c", "state": "s"}))

    for answer in answers:
        single = answer.raw["headers"]
        multi = answer.raw["multiValueHeaders"]
        assert single == {name: values[-1] for name, values in multi.items()}
        assert single["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"


def test_the_callback_location_is_in_the_single_valued_headers(api: ApiHarness) -> None:
    answer = api.callback({"code": "c", "state": "s"})

    assert answer.status == 302
    assert answer.raw["headers"]["Location"].endswith("/admin/integrations/xpm?error=invalid_state")
