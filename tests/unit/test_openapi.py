"""docs/openapi.json is the published contract of SPEC B5: it must match the code that serves it."""

from __future__ import annotations

import json

import pytest

from scripts.openapi import OPENAPI_JSON, render
from tests.fixtures.api import ApiHarness
from tests.fixtures.events import load_event

B5_ROUTES = {
    ("post", "/integrations/xpm/connect"),
    ("post", "/integrations/xpm/callback"),
    ("get", "/integrations/xpm"),
    ("put", "/integrations/xpm"),
    ("delete", "/integrations/xpm"),
    ("get", "/integrations/xpm/tenants"),
    ("post", "/integrations/xpm/sync"),
    ("get", "/integrations/xpm/runs"),
    ("get", "/integrations/xpm/runs/{run_id}"),
    ("get", "/integrations/xpm/runs/{run_id}/entries"),
    ("get", "/integrations/xpm/problems"),
    ("get", "/integrations/xpm/problems/summary"),
    ("post", "/integrations/xpm/preview"),
    ("get", "/integrations/xpm/matches"),
    ("post", "/integrations/xpm/matches/{xpm_uuid}"),
}


def test_the_committed_openapi_document_is_current() -> None:
    assert OPENAPI_JSON.read_text(encoding="utf-8") == render(), (
        "docs/openapi.json is stale: run `PYTHONPATH=layers/shared python -m scripts.openapi --write`"
    )


def test_the_document_covers_every_b5_route_and_only_those() -> None:
    schema = json.loads(render())
    routes = {(method, path) for path, item in schema["paths"].items() for method in item}
    assert routes == B5_ROUTES
    assert schema["info"]["title"] == "xpm-sync API"


def test_errors_are_documented_in_the_b5_shape() -> None:
    schema = json.loads(render())
    put = schema["paths"]["/integrations/xpm"]["put"]
    assert put["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert schema["paths"]["/integrations/xpm/sync"]["post"]["responses"].keys() >= {"202", "409", "429"}
    assert schema["paths"]["/integrations/xpm/preview"]["post"]["responses"].keys() >= {"202", "409", "429"}


def test_every_list_documents_its_cursor_and_the_400_a_bad_one_gets() -> None:
    """SPEC B5: every list pages with an opaque cursor the server verifies (a forged one is 400)."""
    schema = json.loads(render())
    for path in (
        "/integrations/xpm/runs",
        "/integrations/xpm/runs/{run_id}/entries",
        "/integrations/xpm/problems",
        "/integrations/xpm/matches",
    ):
        get = schema["paths"][path]["get"]
        assert "cursor" in {parameter["name"] for parameter in get["parameters"]}, path
        assert "400" in get["responses"], path


def test_no_route_is_public() -> None:
    schema = json.loads(render())
    assert schema["security"] == [{"cognito": []}]
    operations = [operation for item in schema["paths"].values() for operation in item.values()]
    assert all(operation.get("security", [{"cognito": []}]) == [{"cognito": []}] for operation in operations)


def test_the_callback_answers_the_config_and_documents_its_refusals() -> None:
    schema = json.loads(render())
    callback = schema["paths"]["/integrations/xpm/callback"]["post"]
    assert callback["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ConfigResponse"
    }
    assert callback["responses"].keys() >= {"400", "401", "403", "422", "502"}
    assert {"code", "state", "error"} <= set(schema["components"]["schemas"]["CallbackRequest"]["properties"])


SAMPLE_ROUTES = {
    ("api", "get_config"): ("get", "/integrations/xpm"),
    ("api", "put_config"): ("put", "/integrations/xpm"),
    ("api", "delete_config"): ("delete", "/integrations/xpm"),
    ("api", "get_tenants"): ("get", "/integrations/xpm/tenants"),
    ("api", "post_sync"): ("post", "/integrations/xpm/sync"),
    ("api", "get_runs"): ("get", "/integrations/xpm/runs"),
    ("api", "get_run"): ("get", "/integrations/xpm/runs/{run_id}"),
    ("api", "get_run_entries"): ("get", "/integrations/xpm/runs/{run_id}/entries"),
    ("api", "get_problems"): ("get", "/integrations/xpm/problems"),
    ("api", "get_problems_summary"): ("get", "/integrations/xpm/problems/summary"),
    ("api", "post_preview"): ("post", "/integrations/xpm/preview"),
    ("api", "get_matches"): ("get", "/integrations/xpm/matches"),
    ("api", "post_match"): ("post", "/integrations/xpm/matches/{xpm_uuid}"),
    ("oauth", "connect"): ("post", "/integrations/xpm/connect"),
    ("oauth", "callback"): ("post", "/integrations/xpm/callback"),
}


def test_the_samples_cover_every_route() -> None:
    assert set(SAMPLE_ROUTES.values()) == B5_ROUTES


@pytest.mark.parametrize(("function", "case"), SAMPLE_ROUTES, ids=[case for _, case in SAMPLE_ROUTES])
def test_every_route_answers_a_body_that_is_not_json_400_as_its_document_says(
    api: ApiHarness, function: str, case: str
) -> None:
    """SPEC B5: a body that is not JSON is 400 INVALID_JSON on every route, those that take no body
    included; the probe of 2026-12-08 found 7 operations whose document listed no 400."""
    event = load_event(function, case, body="not json")

    answer = api.send_api(event) if function == "api" else api.send_oauth(event)

    assert answer.status == 400, answer.text
    assert answer.json["error"]["code"] == "INVALID_JSON"
    method, path = SAMPLE_ROUTES[(function, case)]
    assert "400" in json.loads(render())["paths"][path][method]["responses"]
