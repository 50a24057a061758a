"""SPEC B3 / B4 / B5: Sync Monitoring reads runs newest first, page by page, and one run's log,
100 entries a page, errors first.

Given runs in the sync log for two firms; when an admin lists or opens them; then they see only
their own firm's runs, and a bad cursor or another firm's run id is a 4xx, never a 500.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import quote

import pytest
from xpm_sync.adapters import aws
from xpm_sync.adapters.sync_log import RunLog
from xpm_sync.domain.entries import (
    ABN_INVALID,
    DEFAULT_PARTNER_NOT_IN_ACTIVE,
    PARTNER_NOT_IN_ACTIVE,
    XPM_RATE_LIMITED,
)
from xpm_sync.domain.runs import RUN_RETENTION, SyncRun, new_counts

from tests.fixtures.api import FIRM, OTHER_FIRM, Answer, ApiHarness, admin_claims, every_page
from tests.fixtures.monitoring import WRITTEN_AT

START = WRITTEN_AT
pytestmark = pytest.mark.usefixtures("read_the_day_after")


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
    pages = every_page(lambda cursor: api.call_api("get_runs", query={"limit": "2"} | cursor))

    assert [r["run_id"] for page in pages for r in page.json["runs"]] == [r.run_id for r in reversed(runs)]
    assert len(pages) == 3  # 2 + 2 + 1: no cursor leads to an empty page


def test_runs_page_for_a_firm_with_a_long_id(api: ApiHarness) -> None:
    """The probe of 2026-12-07 (evening): past 512 characters the API refused its own cursor."""
    firm_id = "firm-" + "é" * 400
    log = RunLog(aws.table(api.names.sync_log_table))
    saved = [_run(firm_id, hour) for hour in range(3)]
    for run in saved:
        log.save_run(run, START)

    pages = every_page(
        lambda cursor: api.call_api("get_runs", claims=admin_claims(firm_id), query={"limit": "1"} | cursor)
    )

    assert all(page.status == 200 for page in pages), [page.text for page in pages]
    assert [r["run_id"] for page in pages for r in page.json["runs"]] == [r.run_id for r in reversed(saved)]


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


@pytest.mark.parametrize("decoded", [True, False], ids=["with path parameters", "path only"])
def test_a_run_id_percent_encoded_in_the_path_reads_the_runs_log(
    api: ApiHarness, runs: list[SyncRun], decoded: bool
) -> None:
    # The probe of 2026-12-07 (evening): a path parameter was read from the path as sent.
    run = runs[-1]
    encoded = quote(run.run_id, safe="").replace("-", "%2D")

    answer = api.call_api(
        "get_run_entries",
        path=f"/integrations/xpm/runs/{encoded}/entries",
        path_parameters={"run_id": run.run_id} if decoded else None,
        query=None,
    )

    assert answer.status == 200, answer.text
    assert [e["run_id"] for e in answer.json["entries"]] == [run.run_id] * 2


def test_the_last_run_shows_on_the_config(api: ApiHarness, runs: list[SyncRun]) -> None:
    answer = api.call_api("get_config")

    assert answer.json["last_run"]["run_id"] == runs[-1].run_id
    assert answer.json["last_run"]["status"] == "partial"
    assert answer.json["last_run"]["kind"] == "run"


def test_a_run_past_its_90_days_is_gone_from_sync_monitoring_before_dynamodb_deletes_it(
    api: ApiHarness, runs: list[SyncRun]
) -> None:
    # DynamoDB deletes an item past its TTL a day or two late: the API compares the stored expiry
    # with the clock, as the notify table's allowance does (the probe of 2026-12-07 (late) left it).
    newest = runs[-1]
    api.clock.set(datetime.fromisoformat(newest.started_at) + RUN_RETENTION + timedelta(seconds=1))

    assert api.call_api("get_runs").json == {"runs": [], "next_cursor": None}
    assert _get_run(api, newest.run_id).status == 404
    assert _entries(api, newest.run_id).status == 404
    assert api.call_api("get_config").json["last_run"] is None


def test_a_newer_run_than_the_expired_ones_is_still_listed_and_read(
    api: ApiHarness, runs: list[SyncRun]
) -> None:
    later = datetime.fromisoformat(runs[-1].started_at) + RUN_RETENTION + timedelta(seconds=1)
    api.clock.set(later)
    fresh = _run(FIRM, 24 * 91)
    RunLog(aws.table(api.names.sync_log_table)).save_run(fresh, later)

    assert [r["run_id"] for r in api.call_api("get_runs").json["runs"]] == [fresh.run_id]
    assert _get_run(api, fresh.run_id).status == 200
    assert api.call_api("get_config").json["last_run"]["run_id"] == fresh.run_id


def _get_run(api: ApiHarness, run_id: str) -> Answer:
    return api.call_api(
        "get_run", path=f"/integrations/xpm/runs/{run_id}", path_parameters={"run_id": run_id}
    )


# --- SPEC B5 (issue 19 item 4): a run's error log in pages of 100, errors first ------------------


def _run_with_log(api: ApiHarness, *, errors: int, warnings: int, firm_id: str = FIRM) -> SyncRun:
    """A partial run whose log has ``errors`` PARTNER_NOT_IN_ACTIVE errors (every third one
    DEFAULT_PARTNER_NOT_IN_ACTIVE instead) and ``warnings`` ABN_INVALID warnings, written
    warnings and errors interleaved, as a run finds them."""
    log = RunLog(aws.table(api.names.sync_log_table))
    run = _run(firm_id, 20, status="partial")
    found = []
    for n in range(max(errors, warnings)):
        if n < warnings:
            found.append(ABN_INVALID.entry(label=f"Warned {n:04d}", message="ABN", xpm_uuid=f"w-{n}"))
        if n < errors:
            kind = DEFAULT_PARTNER_NOT_IN_ACTIVE if n % 3 == 2 else PARTNER_NOT_IN_ACTIVE
            found.append(kind.entry(label=f"Failed {n:04d}", message="Partner", xpm_uuid=f"e-{n}"))
    run.entry_count = log.add_entries(run, found, START)
    log.save_run(run, START)
    return run


def _entries(api: ApiHarness, run_id: str, firm_id: str = FIRM, **query: str) -> Answer:
    return api.call_api(
        "get_run_entries",
        path=f"/integrations/xpm/runs/{run_id}/entries",
        path_parameters={"run_id": run_id},
        query=query or None,
        claims=admin_claims(firm_id),
    )


def _every_entry(api: ApiHarness, run_id: str, **query: str) -> tuple[list[dict[str, object]], int]:
    """Every entry the entries route gives, page by page from the start, and how many pages."""
    pages = every_page(lambda cursor: _entries(api, run_id, **query, **cursor))
    return [entry for page in pages for entry in page.json["entries"]], len(pages)


def test_a_run_answers_at_most_100_entries_errors_first_and_a_cursor_to_the_rest(api: ApiHarness) -> None:
    run = _run_with_log(api, errors=60, warnings=90)

    answer = _get_run(api, run.run_id)

    assert answer.status == 200
    entries = answer.json["entries"]
    assert len(entries) == 100
    assert [e["severity"] for e in entries] == ["error"] * 60 + ["warning"] * 40
    assert [e["label"] for e in entries[:3]] == ["Failed 0000", "Failed 0001", "Failed 0002"]
    assert answer.json["entry_count"] == 150
    rest = _entries(api, run.run_id, cursor=answer.json["entries_next_cursor"])
    assert [e["label"] for e in rest.json["entries"]] == [f"Warned {n:04d}" for n in range(40, 90)]
    assert rest.json["next_cursor"] is None


def test_a_run_whose_log_fits_one_page_has_no_entries_cursor(api: ApiHarness, runs: list[SyncRun]) -> None:
    answer = _get_run(api, runs[-1].run_id)

    assert answer.json["entries_next_cursor"] is None


def test_the_entries_route_pages_the_whole_log_from_the_start_errors_first(api: ApiHarness) -> None:
    run = _run_with_log(api, errors=130, warnings=120)

    seen, pages = _every_entry(api, run.run_id)

    assert pages == 3
    assert [e["label"] for e in seen] == [f"Failed {n:04d}" for n in range(130)] + [
        f"Warned {n:04d}" for n in range(120)
    ]
    assert {(e["firm_id"], e["run_id"], e["kind"]) for e in seen} == {(FIRM, run.run_id, "entry")}


def test_the_entries_route_filters_by_severity_and_by_code_across_pages(api: ApiHarness) -> None:
    run = _run_with_log(api, errors=330, warnings=40)

    warnings, _ = _every_entry(api, run.run_id, severity="warning")
    defaults, default_pages = _every_entry(api, run.run_id, code="DEFAULT_PARTNER_NOT_IN_ACTIVE")
    both, _ = _every_entry(api, run.run_id, severity="error", code="PARTNER_NOT_IN_ACTIVE")
    none, _ = _every_entry(api, run.run_id, severity="warning", code="PARTNER_NOT_IN_ACTIVE")

    assert [e["label"] for e in warnings] == [f"Warned {n:04d}" for n in range(40)]
    assert [e["label"] for e in defaults] == [f"Failed {n:04d}" for n in range(2, 330, 3)]
    assert default_pages == 2  # 110 of them: 100 and 10
    assert len(both) == 330 - 110
    assert {e["code"] for e in both} == {"PARTNER_NOT_IN_ACTIVE"}
    assert none == []


@pytest.mark.parametrize("severity", ["fatal", "ERROR", "", "info"])
def test_a_bad_severity_is_422_naming_it(api: ApiHarness, severity: str) -> None:
    run = _run_with_log(api, errors=1, warnings=1)

    answer = _entries(api, run.run_id, severity=severity)

    assert answer.status == 422
    assert answer.json["error"]["code"] == "INVALID_FIELD"
    assert answer.json["error"]["field"] == "severity"


def test_an_unknown_run_or_another_firms_run_has_no_entries_404(api: ApiHarness) -> None:
    foreign = _run_with_log(api, errors=3, warnings=0, firm_id=OTHER_FIRM)

    theirs = _entries(api, foreign.run_id)
    unknown = _entries(api, "20260302T090000000000Z-00000000")
    malformed = _entries(api, "not a run id!")

    assert theirs.status == unknown.status == malformed.status == 404
    assert theirs.json == unknown.json == {"error": {"code": "NOT_FOUND", "message": "No such run."}}
    assert _entries(api, foreign.run_id, firm_id=OTHER_FIRM).status == 200


def test_an_entries_cursor_of_another_run_or_filter_is_400(api: ApiHarness) -> None:
    run = _run_with_log(api, errors=150, warnings=0)
    other = _run(FIRM, 21, status="partial")
    log = RunLog(aws.table(api.names.sync_log_table))
    other.entry_count = log.add_entries(
        other, [PARTNER_NOT_IN_ACTIVE.entry(label=f"L{n}", message="m") for n in range(150)], START
    )
    log.save_run(other, START)
    cursor = _entries(api, run.run_id).json["next_cursor"]
    filtered = _entries(api, run.run_id, severity="error").json["next_cursor"]

    for answer in (
        _entries(api, other.run_id, cursor=cursor),
        _entries(api, run.run_id, cursor=cursor, severity="error"),
        _entries(api, run.run_id, cursor=filtered),
        _entries(api, run.run_id, cursor=cursor, code="PARTNER_NOT_IN_ACTIVE"),
    ):
        assert answer.status == 400
        assert answer.json["error"]["code"] == "INVALID_CURSOR"
    assert _entries(api, run.run_id, cursor=cursor).status == 200


def test_a_code_filter_longer_than_any_entry_code_is_422(api: ApiHarness) -> None:
    run = _run_with_log(api, errors=1, warnings=0)

    answer = _entries(api, run.run_id, code="X" * 65)

    assert answer.status == 422
    assert answer.json["error"]["field"] == "code"


def test_a_preview_run_reads_as_a_dry_run_with_what_it_would_link(api: ApiHarness) -> None:
    """SPEC B6: a dry run's counts give, per entity, the B3 outcomes plus ``linked``."""
    counts = new_counts(dry_run=True)
    counts["client"].update(created=3, linked=1, skipped=1)
    preview = _run(FIRM, 30).model_copy(update={"dry_run": True, "trigger": "manual", "counts": counts})
    RunLog(aws.table(api.names.sync_log_table)).save_run(preview, START)
    real = _run(FIRM, 31)
    RunLog(aws.table(api.names.sync_log_table)).save_run(real, START)

    detail = _get_run(api, preview.run_id).json
    listed = {run["run_id"]: run for run in api.call_api("get_runs").json["runs"]}

    assert detail["dry_run"] is True
    assert detail["counts"]["client"] == {
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "failed": 0,
        "skipped": 1,
        "linked": 1,
    }
    assert listed[preview.run_id]["dry_run"] is True
    assert listed[real.run_id]["dry_run"] is False
    assert "linked" not in listed[real.run_id]["counts"]["client"], "a real run counts no links apart"
