"""The REST API under generated input: no 5xx, and every answer is one docs/openapi.json promises.

Schemathesis reads the committed OpenAPI document (the contract the Active frontend builds on) and
sends valid and invalid requests to every operation over real HTTP (``local.serve.serve_api`` on
loopback, moto server, the Xero simulator), for a firm that has finished the setup flow: connected,
configured, a manual run queued. Each answer must not be a server error, must use a documented
status, content type and headers, and must match the documented body schema.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from xpm_sync.adapters import aws

from functions.sync_worker.app import lambda_handler as worker_handler
from local.admin_flow import run_admin_flow
from local.lambda_runtime import drain_queue
from local.serve import DEMO_FIRM_ID, DEMO_OFFICE_CODE, ServedApi
from local.stack import StackNames
from local.xpm_sim import Simulator
from tests.fixtures.monitoring import seed_client

pytestmark = pytest.mark.e2e

OPENAPI = Path(__file__).resolve().parent.parent.parent / "docs" / "openapi.json"
# Per operation; Schemathesis adds a few boundary cases of its own on top.
MAX_EXAMPLES = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# What this module sent, for docs/reliability.md (written to $RELIABILITY_REPORT_DIR/fuzz.json).
CASES: Counter[str] = Counter()
STATUSES: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def reliability_report() -> Iterator[None]:
    yield
    directory = os.environ.get("RELIABILITY_REPORT_DIR")
    if directory:
        report = {
            "cases": sum(CASES.values()),
            "operations": len(CASES),
            "per_operation": dict(sorted(CASES.items())),
            # Statuses of the declared operations only.
            "statuses": dict(sorted(STATUSES.items())),
        }
        Path(directory, "fuzz.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


@pytest.fixture
def synced(served: ServedApi, aws_server: StackNames, simulator: Simulator) -> ServedApi:
    """The API over HTTP for the demo firm, after the admin connected, saved and pressed Start Sync,
    and the worker ran that sync: Sync Monitoring's lists hold a run with its log, the open
    problems the demo practice plants, and a suggested link (a trial client named as an XPM client
    whose code Active does not have), so their items meet the contract too."""
    practice = simulator.practices[0]
    active = boto3.resource("dynamodb").Table(aws_server.active_table)
    active_codes = {item.get("code") for item in active.scan()["Items"]}
    look_alike = next(c for c in practice.clients if c.name and c.code and c.code not in active_codes)
    seed_client(
        aws_server, DEMO_FIRM_ID, "trial-look-alike", legal_name=look_alike.name, office_code=DEMO_OFFICE_CODE
    )
    with httpx.Client(timeout=15) as http:
        run_admin_flow(served.url, http)
        drain_queue(aws.client("sqs"), aws_server.queue_url, worker_handler)
        for path, items in (("runs", "runs"), ("problems", "problems"), ("matches", "matches")):
            listed = http.get(f"{served.url}/integrations/xpm/{path}").json()[items]
            assert listed, f"the fuzz would meet no {path} item"
    return served


# Loaded at collection, one test per operation. (schemathesis.pytest.from_fixture, the lazy form, reads
# pytest's private Function._nodeid, which pytest 9.2 no longer has.)
schema = schemathesis.openapi.from_path(OPENAPI)
DOCUMENTED_METHODS = {
    path: set(item) for path, item in json.loads(OPENAPI.read_text(encoding="utf-8"))["paths"].items()
}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_error_and_every_answer_matches_the_contract(case: Case[Any], synced: ServedApi) -> None:
    # No route redirects; a redirect would be an answer the document does not promise.
    response = case.call(base_url=synced.url, allow_redirects=False, timeout=15)
    if case.method.lower() not in DOCUMENTED_METHODS[case.path]:
        # A method the API does not declare (TRACE, PATCH, ...) never reaches our functions in AWS:
        # API Gateway answers it. The local server's own 501 says nothing about the product.
        CASES["undeclared method (answered by API Gateway in AWS)"] += 1
        assert response.status_code != 500
        return
    CASES[f"{case.method} {case.path}"] += 1
    STATUSES[str(response.status_code)] += 1
    case.validate_response(response, checks=CHECKS)


# --- what the fuzz found, kept as plain regression tests -------------------------------------------


def test_a_body_that_is_not_utf8_is_a_400_not_a_dropped_connection(served: ServedApi) -> None:
    """Found by the fuzz: the local server's thread died decoding it and dropped the connection."""
    with httpx.Client(timeout=15) as http:
        answer = http.post(
            served.url + "/integrations/xpm/connect",
            content=b'{"sync_name": "\xff\xfe"}',
            headers={"Content-Type": "application/json"},
        )

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "INVALID_JSON"


@pytest.mark.parametrize(
    "body",
    [
        b'{"state": "one", "state": "two", "code": "x"}',
        b'{"state": "", "error": null, "code": "x"}',
        b'{"state": "description", "error": "access_denied"}',
    ],
)
def test_a_callback_with_a_state_the_caller_was_not_issued_is_400_in_the_error_shape(
    served: ServedApi, body: bytes
) -> None:
    """The callback of the bound flow (SPEC B4): whatever the body names, a state this admin's own
    connect did not issue is OAUTH_STATE_INVALID, never a 5xx."""
    with httpx.Client(timeout=15) as http:
        answer = http.post(
            served.url + "/integrations/xpm/callback",
            content=body,
            headers={"Content-Type": "application/json"},
        )

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "OAUTH_STATE_INVALID"


# Issue 18, item 4: bodies that escaped the handler (a RecursionError outside the resolver made API
# Gateway answer 502 without the error shape; a 4,301-digit integer was a 500).
UNREADABLE = {
    "nested 989 levels": b"[" * 989 + b"]" * 989,
    "nested 65 objects": b'{"a": ' * 65 + b"1" + b"}" * 65,
    "a 4,301-digit integer": b'{"sync_name": ' + b"1" * 4301 + b"}",
    "a 101-digit number": b'{"sync_name": "x", "n": ' + b"1" * 101 + b"}",
    "over 64 KB": b'{"sync_name": "' + b"x" * (64 * 1024) + b'"}',
    "not UTF-8": b'{"sync_name": "\xc3\x28"}',
}


@pytest.mark.parametrize("body", UNREADABLE.values(), ids=UNREADABLE.keys())
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/integrations/xpm"),
        ("POST", "/integrations/xpm/connect"),
        ("POST", "/integrations/xpm/callback"),
    ],
)
def test_a_body_the_api_cannot_read_is_400_invalid_json_over_http(
    served: ServedApi, method: str, path: str, body: bytes
) -> None:
    with httpx.Client(timeout=15) as http:
        answer = http.request(
            method, served.url + path, content=body, headers={"Content-Type": "application/json"}
        )

    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["error"]["code"] == "INVALID_JSON"
    assert answer.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [("PUT", "/integrations/xpm", 409), ("POST", "/integrations/xpm/connect", 200)],
)
def test_a_form_content_type_without_boundary_is_read_as_the_json_it_is_not_a_500(
    served: ServedApi, method: str, path: str, expected: int
) -> None:
    """Found by the fuzz: Powertools' form parsing raised ValueError, which became a 500. The body
    is JSON, so it is read as JSON: SPEC B5 judges the body, not the type it is labelled with."""
    with httpx.Client(timeout=15) as http:
        answer = http.request(
            method,
            served.url + path,
            content=b'{"sync_name": "XPM Sync"}',
            headers={"Content-Type": "multipart/form-data"},
        )

    assert answer.status_code == expected, answer.text
