"""SPEC B4 / B5: who may call, and the one error shape every answer uses.

Given each route's sample event; when the caller is not a firm's admin, or asks for a route that
does not exist; then the answer is a 4xx in B5's shape, never a 500, and carries the CORS origin.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from xpm_sync.api.caller import admin_caller, groups_of
from xpm_sync.api.http import unreadable_json
from xpm_sync.domain.errors import NotAnAdmin, NotSignedIn

from tests.fixtures.api import Answer, ApiHarness
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


def test_a_content_type_decides_nothing_the_body_does(api: ApiHarness) -> None:
    """SPEC B5 answers a body that is not JSON with 400, whatever it is labelled (this answered 415
    before the probe of 2026-12-07, evening; 415 is not in the contract)."""
    answer = api.call_api("put_config", headers={"Content-Type": "text/csv"})

    assert answer.status == 409, "JSON labelled text/csv is read: the firm is not connected"
    assert answer.json["error"]["code"] == "NOT_CONNECTED"


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


def assert_invalid_json(answer: Answer) -> None:
    """SPEC B5: a body the API cannot read is a 400 INVALID_JSON."""
    assert answer.status == 400, answer.text[:300]
    assert answer.json["error"]["code"] == "INVALID_JSON"


def test_a_body_that_is_not_utf8_is_400(api: ApiHarness) -> None:
    event_body = base64.b64encode(b"\xff\xfe{not text").decode()
    assert_invalid_json(api.call_api("put_config", body=event_body, is_base64=True))


@pytest.mark.parametrize("content_type", ["multipart/form-data", "application/x-www-form-urlencoded"])
def test_a_form_body_is_400_not_500(api: ApiHarness, content_type: str) -> None:
    assert_invalid_json(api.call_api("put_config", body="a=1", headers={"Content-Type": content_type}))


@pytest.mark.parametrize("prefix", ["/Prod", "/v1"])
def test_a_stage_or_base_path_before_the_route_still_reaches_it(api: ApiHarness, prefix: str) -> None:
    # A custom domain's base path mapping, or a caller that copied the stage into the path.
    answer = api.call_api("get_config", path=f"{prefix}/integrations/xpm")
    callback = api.callback({"code": "c", "state": "s"})
    callback_event = load_event("oauth", "callback", body={"code": "c", "state": "s"})
    callback_event["path"] = f"{prefix}/integrations/xpm/callback"
    prefixed_callback = api.send_oauth(callback_event)

    assert answer.status == 200
    assert answer.json["status"] == "not_connected"
    assert prefixed_callback.status == callback.status == 400
    assert prefixed_callback.json == callback.json
    assert callback.json["error"]["code"] == "OAUTH_STATE_INVALID"


def test_an_event_with_only_the_request_contexts_path_and_method_is_routed(api: ApiHarness) -> None:
    event = load_event("api", "get_config")
    del event["path"], event["httpMethod"]

    answer = api.send_api(event)

    assert answer.status == 200
    assert answer.json["status"] == "not_connected"


GET_CASES = [
    "get_config",
    "get_tenants",
    "get_runs",
    "get_run",
    "get_run_entries",
    "get_problems",
    "get_problems_summary",
    "get_matches",
]


def _with_nulls(event: dict[str, Any], form: str) -> dict[str, Any]:
    """The sample event with null query values added beside its own (API Gateway sends none; a
    hand-built event may)."""
    single = dict(event["queryStringParameters"] or {})
    multi = dict(event["multiValueQueryStringParameters"] or {})
    if form == "a null value":
        event["queryStringParameters"] = {**single, "cursor": None}
    elif form == "a null value of a parameter no route takes":
        event["queryStringParameters"] = {**single, "other": None}
        event["multiValueQueryStringParameters"] = {**multi, "other": [None]}
    elif form == "null items in the multi-value lists":
        event["queryStringParameters"] = {**single, "cursor": None}
        multi = {name: [None, *values] for name, values in multi.items()}
        event["multiValueQueryStringParameters"] = {**multi, "cursor": [None], "code": [None, None]}
    else:  # a multi-value that is not a list
        event["multiValueQueryStringParameters"] = {
            **{name: values[-1] for name, values in multi.items()},
            "cursor": None,
        }
    return event


@pytest.mark.parametrize(
    "form",
    [
        "a null value",
        "a null value of a parameter no route takes",
        "null items in the multi-value lists",
        "a multi-value that is not a list",
    ],
)
@pytest.mark.parametrize("case", GET_CASES)
def test_a_null_query_value_is_a_parameter_not_given(api: ApiHarness, case: str, form: str) -> None:
    """The probe of 2026-12-07 (evening): a null query value was a 500 on every GET route."""
    # Given the route's sample request, and the same with null query values beside its own
    plain = api.send_api(load_event("api", case))

    # When the one with nulls is sent
    answer = api.send_api(_with_nulls(load_event("api", case), form))

    # Then it is answered as if they were not there
    assert answer.status < 500, answer.text
    assert (answer.status, answer.json) == (plain.status, plain.json)


def test_every_answer_carries_headers_in_both_proxy_forms(api: ApiHarness) -> None:
    answers = [api.call_api("get_config"), api.call_api("get_config", claims=None)]
    answers.append(api.callback({"code": "c", "state": "s"}))

    for answer in answers:
        single = answer.raw["headers"]
        multi = answer.raw["multiValueHeaders"]
        assert single == {name: values[-1] for name, values in multi.items()}
        assert single["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"


# --- SPEC B5: a body the API cannot read is 400 INVALID_JSON, never a 5xx or a function error ------


def _nested(levels: int, inner: str = "{}") -> str:
    return '{"sync_name": ' * levels + inner + "}" * levels


def _sized(total: int) -> str:
    """A connect body of exactly ``total`` bytes that connect accepts (unknown keys are ignored)."""
    head, tail = '{"sync_name": "Sized", "padding": "', '"}'
    return head + "x" * (total - len(head) - len(tail)) + tail


UNREADABLE_BODIES = {
    "nested 65 levels": _nested(65),
    "nested 989 levels (RecursionError before)": "[" * 989 + "]" * 989,
    "nested 100,000 levels": "[" * 100_000,
    "a 101-digit number": '{"sync_name": ' + "9" * 101 + "}",
    "a 4,301-digit integer (a 500 before)": '{"sync_name": ' + "1" * 4301 + "}",
    "a 150-digit fraction": '{"sync_name": 0.' + "1" * 149 + "}",
    "a number deep in an array": '{"sync_name": "x", "list": [1, 2, ' + "3" * 101 + "]}",
    "over 64 KB": _sized(64 * 1024 + 1),
    "a string that never ends, full of escaped quotes": '{"sync_name": "' + '\\"' * 20_000,
}


@pytest.mark.parametrize("body", UNREADABLE_BODIES.values(), ids=UNREADABLE_BODIES.keys())
@pytest.mark.parametrize(
    ("function", "case"), [("api", "put_config"), ("oauth", "connect"), ("oauth", "callback")]
)
def test_a_body_the_api_cannot_read_is_400_invalid_json(
    api: ApiHarness, function: str, case: str, body: str
) -> None:
    event = load_event(function, case, body=body)

    answer = api.send_api(event) if function == "api" else api.send_oauth(event)

    assert_invalid_json(answer)
    assert set(answer.json) == {"error"}
    assert answer.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    assert api.config_item() is None, "nothing was written"


@pytest.mark.parametrize(
    ("raw", "is_base64"),
    [
        (base64.b64encode(b'{"sync_name": "\xff\xfe"}').decode(), True),
        (base64.b64encode(_sized(64 * 1024 + 1).encode()).decode(), True),
        ('{"sync_name": "\ud800"}', False),  # a lone surrogate: no UTF-8 can carry it
    ],
    ids=["base64 not UTF-8", "base64 over 64 KB", "text with a lone surrogate"],
)
def test_a_body_that_is_not_utf8_or_too_large_once_decoded_is_400(
    api: ApiHarness, raw: str, is_base64: bool
) -> None:
    event = load_event("oauth", "connect", body=raw)
    event["isBase64Encoded"] = is_base64

    assert_invalid_json(api.send_oauth(event))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_nested(64, '"Deep enough"'), 422),  # 64 levels are read; the value is just of the wrong type
        ('{"sync_name": ' + "9" * 100 + "}", 422),  # 100 digits are read
        ('{"sync_name": "' + "9" * 99 + '"}', 200),  # digits in a string are not a number
        ('{"sync_name": "' + "[" * 99 + '"}', 200),  # nor are brackets
        ('{"sync_name": "quote \\" [[[ and \\\\"}', 200),  # escaped quotes and backslashes
        (_sized(64 * 1024), 200),
    ],
    ids=["64 levels", "100 digits", "digits in a string", "brackets in a string", "escapes", "exactly 64 KB"],
)
def test_a_body_within_the_limits_is_read(api: ApiHarness, body: str, status: int) -> None:
    answer = api.call_oauth("connect", body=body)

    assert answer.status == status, answer.text[:300]
    if status == 422:
        assert answer.json["error"]["field"] == "sync_name"


def test_a_hand_built_event_whose_body_value_cannot_be_written_as_json_is_400(api: ApiHarness) -> None:
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    event = load_event("oauth", "connect")
    event["body"] = nested

    assert_invalid_json(api.send_oauth(event))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{}", None),
        ("[" * 64 + "]" * 64, None),
        ("[" * 65, "nest"),
        ('{"a": "' + "{" * 100 + '"}', None),
        ('{"a": "\\"' + "[" * 100 + '"}', None),
        ("1" * 100, None),
        ("1" * 101, "digits"),
        ("-1." + "0" * 50 + "e" + "1" * 50, "digits"),
        ('{"a": "never ends', "JSON object"),
    ],
)
def test_unreadable_json_looks_at_brackets_strings_and_numbers_only(text: str, problem: str | None) -> None:
    found = unreadable_json(text)

    assert (found is None) == (problem is None)
    if problem is not None:
        assert problem in str(found)


def test_unreadable_json_takes_linear_time_on_hostile_text() -> None:
    started = time.perf_counter()
    for text in ('"\\"' * 30_000, '"' * 60_000, "[" * 60_000, "1" * 60_000, ('"a",' * 15_000)):
        unreadable_json(text)
    assert time.perf_counter() - started < 2.0
