"""SPEC B3 / B4 / B5: Sync Monitoring reads runs newest first, page by page, and one run's log.

Given runs in the sync log for two firms; when an admin lists or opens them; then they see only
their own firm's runs, and a bad cursor or another firm's run id is a 4xx, never a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from xpm_sync.adapters import aws
from xpm_sync.adapters.sync_log import RunLog
from xpm_sync.domain.entries import PARTNER_NOT_IN_ACTIVE, XPM_RATE_LIMITED
from xpm_sync.domain.runs import SyncRun, new_counts

from tests.fixtures.api import FIRM, OTHER_FIRM, Answer, ApiHarness, admin_claims

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _run(firm_id: str, hour: int, status: str = "success") -> SyncRun:
    started = START + timedelta(hours=hour)
    counts = new_counts()
    counts["client"]["created"] = hour
    return SyncRun(
        firm_id=firm_id,
        run_id=f"{started.strftime('%Y%m%dT%H%M%SZ')}-{hour:08x}",
        trigger="schedule",
        status=status,
        started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        finished_at=(started + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        counts=counts,
        xpm_calls=3,
    )


@pytest.fixture
def runs(api: ApiHarness) -> list[SyncRun]:
    log = RunLog(aws.table(api.names.sync_log_table))
    saved = [_run(FIRM, hour) for hour in range(5)]
    for run in saved:
        log.save_run(run, START)
    partial = saved[-1].model_copy(update={"status": "partial", "entry_count": 2})
    log.save_run(partial, START)
    log.add_entries(
        partial,
        [
            PARTNER_NOT_IN_ACTIVE.entry(
                label="Acme Pty Ltd (ACME01)",
                message="Partner missing",
                xpm_uuid="u-1",
            ),
            XPM_RATE_LIMITED.entry(label="XPM", message="Rate limited"),
        ],
        START,
    )
    log.save_run(_run(OTHER_FIRM, 9), START)
    saved[-1] = partial
    return saved


def test_runs_are_listed_newest_first(api: ApiHarness, runs: list[SyncRun]) -> None:
    answer = api.call_api("get_runs")

    assert answer.status == 200
    listed = answer.json["runs"]
    assert [r["run_id"] for r in listed] == [r.run_id for r in reversed(runs)]
    assert answer.json["next_cursor"] is None
    newest = listed[0]
    assert newest["status"] == "partial"
    assert newest["counts"]["client"]["created"] == 4
    assert set(newest) >= {"run_id", "trigger", "status", "started_at", "finished_at", "counts", "xpm_calls"}
    # The run's B3 attributes: the caller's own firm, and the item kind.
    assert newest["firm_id"] == FIRM
    assert newest["kind"] == "run"


def test_runs_page_with_a_cursor(api: ApiHarness, runs: list[SyncRun]) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        answer = api.call_api("get_runs", query=query)
        assert answer.status == 200
        seen += [r["run_id"] for r in answer.json["runs"]]
        pages += 1
        cursor = answer.json["next_cursor"]
        if cursor is None:
            break

    assert seen == [r.run_id for r in reversed(runs)]
    assert pages == 3  # 2 + 2 + 1: no cursor leads to an empty page


def test_a_page_holding_exactly_the_last_runs_has_no_next_cursor(
    api: ApiHarness, runs: list[SyncRun]
) -> None:
    answer = api.call_api("get_runs", query={"limit": str(len(runs))})

    assert len(answer.json["runs"]) == len(runs)
    assert answer.json["next_cursor"] is None


def test_a_firm_sees_only_its_own_runs(api: ApiHarness, runs: list[SyncRun]) -> None:
    answer = api.call_api("get_runs", claims=admin_claims(OTHER_FIRM))

    assert [r["run_id"] for r in answer.json["runs"]] == [_run(OTHER_FIRM, 9).run_id]


@pytest.mark.parametrize("cursor", ["garbage", "eyJhZnRlciI6IDF9", "%%%", "x" * 600])
def test_a_bad_cursor_is_400_not_500(api: ApiHarness, runs: list[SyncRun], cursor: str) -> None:
    answer = api.call_api("get_runs", query={"cursor": cursor})

    assert answer.status == 400
    assert answer.json["error"]["code"] == "INVALID_CURSOR"


@pytest.mark.parametrize("limit", ["0", "101", "-5", "ten", "1.5"])
def test_a_bad_limit_is_422_naming_it(api: ApiHarness, runs: list[SyncRun], limit: str) -> None:
    answer = api.call_api("get_runs", query={"limit": limit})

    assert answer.status == 422
    assert answer.json["error"]["field"] == "limit"


def test_one_run_with_its_error_log(api: ApiHarness, runs: list[SyncRun]) -> None:
    run = runs[-1]

    answer = _get_run(api, run.run_id)

    assert answer.status == 200
    body = answer.json
    assert body["run_id"] == run.run_id
    assert body["status"] == "partial"
    assert [e["code"] for e in body["entries"]] == ["PARTNER_NOT_IN_ACTIVE", "XPM_RATE_LIMITED"]
    first = body["entries"][0]
    assert first["suggestion"] == PARTNER_NOT_IN_ACTIVE.suggestion
    assert first["label"] == "Acme Pty Ltd (ACME01)"
    assert first["xpm_uuid"] == "u-1"
    assert body["entries"][1]["entity"] == "run"
    assert "xpm_uuid" not in body["entries"][1]  # a run-level entry has none (SPEC B3)
    assert body["firm_id"] == FIRM
    assert body["kind"] == "run"
    for entry in body["entries"]:
        assert (entry["firm_id"], entry["run_id"], entry["kind"]) == (FIRM, run.run_id, "entry")


def test_another_firms_run_is_404_as_if_it_did_not_exist(api: ApiHarness, runs: list[SyncRun]) -> None:
    foreign = _run(OTHER_FIRM, 9).run_id

    answer = _get_run(api, foreign)
    unknown = _get_run(api, "nope")

    assert answer.status == 404
    assert answer.json == unknown.json == {"error": {"code": "NOT_FOUND", "message": "No such run."}}


def test_the_last_run_shows_on_the_config(api: ApiHarness, runs: list[SyncRun]) -> None:
    answer = api.call_api("get_config")

    assert answer.json["last_run"]["run_id"] == runs[-1].run_id
    assert answer.json["last_run"]["status"] == "partial"
    assert answer.json["last_run"]["kind"] == "run"


def _get_run(api: ApiHarness, run_id: str) -> Answer:
    return api.call_api(
        "get_run", path=f"/integrations/xpm/runs/{run_id}", path_parameters={"run_id": run_id}
    )
