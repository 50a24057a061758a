"""The REST API over real HTTP (serve_api) on moto server and the XPM simulator: the setup flow of
SPEC A6 as the Active frontend drives it, and B5's answers to a browser's mistakes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import boto3
import httpx
import pytest

from local.admin_flow import run_admin_flow
from local.serve import DEMO_FIRM_ID, ServedApi, consenting_admin, run_worker
from local.stack import StackNames
from local.xpm_sim import generate_practice

pytestmark = pytest.mark.e2e


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=15) as client:
        yield client


def test_the_admin_setup_flow_over_http(
    served: ServedApi, http: httpx.Client, aws_server: StackNames
) -> None:
    seen = run_admin_flow(served.url, http)

    # Xero sent the browser to the Active setup page (the frontend), which posted code and state.
    assert seen["setup_page"].startswith("http://127.0.0.1:5173/admin/integrations/xpm/callback?code=")
    assert seen["connected"]["status"] == "connected"
    assert seen["connected"] == seen["config"], "the callback answers the config, as GET does"
    assert seen["config"]["status"] == "connected"
    assert seen["config"]["connected_by"] == {"name": "Pat Partner", "email": "pat@firm.example"}
    assert len(seen["tenants"]) == 1
    assert seen["saved"]["default_office_code"] == "MEL"
    assert seen["sync"] == {"status": "queued", "sync_enabled": True}
    messages = boto3.client("sqs").receive_message(QueueUrl=aws_server.queue_url, MaxNumberOfMessages=10)
    assert [json.loads(m["Body"]) for m in messages["Messages"]] == [
        {"firm_id": DEMO_FIRM_ID, "trigger": "manual"}
    ]

    again = http.post(f"{served.url}/integrations/xpm/sync")
    assert again.status_code == 429
    assert int(again.headers["Retry-After"]) == again.json()["retry_after"]

    runs = http.get(f"{served.url}/integrations/xpm/runs", params={"limit": 5})
    assert runs.status_code == 200
    assert runs.json() == {"runs": [], "next_cursor": None}

    gone = http.delete(f"{served.url}/integrations/xpm")
    assert gone.status_code == 200
    assert gone.json()["status"] == "disconnected"
    assert http.get(f"{served.url}/integrations/xpm/tenants").status_code == 409


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("PUT", "/integrations/xpm", b"{not json", 400, "INVALID_JSON"),
        ("POST", "/integrations/xpm/connect", b'{"sync_name": 1}', 422, "INVALID_FIELD"),
        # The served firm is not connected: that comes before what the body holds (SPEC B5).
        ("PUT", "/integrations/xpm", b'{"sync_name": 1}', 409, "NOT_CONNECTED"),
        ("GET", "/integrations/xpm/runs?limit=1000", b"", 422, "INVALID_FIELD"),
        ("GET", "/integrations/xpm/runs?cursor=nope", b"", 400, "INVALID_CURSOR"),
        ("GET", "/integrations/xpm/runs/20260101T000000Z-deadbeef", b"", 404, "NOT_FOUND"),
        ("GET", "/integrations/xpm/nowhere", b"", 404, "NOT_FOUND"),
        ("POST", "/integrations/xpm/sync", b"", 409, "NOT_CONNECTED"),
        ("POST", "/integrations/xpm/callback", b'{"code": "c", "state": "s"}', 400, "OAUTH_STATE_INVALID"),
        ("POST", "/integrations/xpm/callback", b'{"state": "s"}', 422, "INVALID_FIELD"),
        ("POST", "/integrations/xpm/callback", b"[" * 1000, 400, "INVALID_JSON"),
        ("PUT", "/integrations/xpm", b'{"sync_name": ' + b"7" * 4301 + b"}", 400, "INVALID_JSON"),
        ("POST", "/integrations/xpm/connect", b'{"sync_name": "\xff"}', 400, "INVALID_JSON"),
    ],
)
def test_client_mistakes_over_http_are_4xx_in_the_b5_shape(
    served: ServedApi, http: httpx.Client, method: str, path: str, content: bytes, status: int, code: str
) -> None:
    response = http.request(
        method, f"{served.url}{path}", content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"


def test_there_is_no_get_callback_over_http(served: ServedApi, http: httpx.Client) -> None:
    response = http.get(f"{served.url}/integrations/xpm/callback", params={"code": "c", "state": "s"})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_the_preflight_allows_only_the_frontend(served: ServedApi, http: httpx.Client) -> None:
    response = http.options(f"{served.url}/integrations/xpm")

    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"


def test_make_serve_runs_what_start_sync_queues_and_serves_every_b5_route(
    served: ServedApi, http: httpx.Client, aws_server: StackNames
) -> None:
    """The newcomer's probe of 2026-12-07: `make serve` queued Start Sync's run and never ran it,
    and the routes of issues 19 to 22 (entries, problems, preview, matches) were not served."""
    run_admin_flow(served.url, http)
    base = f"{served.url}/integrations/xpm"
    stop = run_worker(aws_server.queue_url, every_seconds=0.1)
    try:
        for _ in range(100):
            runs = http.get(f"{base}/runs").json()["runs"]
            if runs and runs[0]["status"] != "running":
                break
            time.sleep(0.1)
    finally:
        stop()

    [run] = runs
    assert run["trigger"] == "manual"
    assert run["status"] in ("success", "partial")
    assert http.get(f"{base}/runs/{run['run_id']}/entries").status_code == 200
    assert http.get(f"{base}/problems").status_code == 200
    assert http.get(f"{base}/problems/summary").status_code == 200
    assert http.get(f"{base}/matches").status_code == 200
    unknown = http.post(f"{base}/matches/not-a-suggestion", json={"action": "create"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "NOT_FOUND")


def test_make_serve_consents_as_a_member_of_the_served_practices_staff() -> None:
    """The newcomer's walk-through of 2026-12-08: `make serve` consented as someone outside the
    practice's staff, so every run it served warned CONNECTION_OWNER_NOT_IN_XPM (SPEC A6)."""
    practice = generate_practice(7, staff=10, clients=40, problem_share=0.1, tenant_name="Harbour & Co")

    _, email = consenting_admin(practice)

    assert email in {staff.email for staff in practice.staff}
