"""SPEC B5 / B6 (issue 22 item 1): Preview queues a dry run, behind Start Sync's 409s and its own 429.

Given a connected firm whose setup is saved; when the admin presses Preview (once, twice, again
later); then one dry run is saved and queued per press the gate lets through, it is read through
the runs API like any run, and nothing is written to Active, nor to the firm's sync state.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from xpm_sync.adapters import aws
from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.sync_log import RunLog
from xpm_sync.adapters.sync_queue import SyncQueue
from xpm_sync.domain.clock import SystemClock, iso
from xpm_sync.domain.errors import NotConfigured, PreviewTooSoon
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.preview import preview_refusal

from functions.sync_worker.app import lambda_handler as worker_handler
from local.lambda_runtime import drain_queue
from local.seed import seed_active_firm
from tests.fixtures.api import FIRM, OTHER_FIRM, Answer, ApiHarness, admin_claims

OFFICE = "MEL"


@pytest.fixture
def firm(api: ApiHarness) -> ApiHarness:
    api.connect()
    api.set_up(OFFICE)
    return api


def _preview(api: ApiHarness, firm_id: str = FIRM) -> Answer:
    return api.call_api("post_preview", claims=admin_claims(firm_id))


def _preview_ended(api: ApiHarness) -> None:
    """What the worker does when a preview ends."""
    api.update_config(preview_pending=False)


def _active_items(api: ApiHarness) -> list[dict[str, Any]]:
    return sorted(
        boto3.resource("dynamodb").Table(api.names.active_table).scan()["Items"],
        key=lambda item: (item["pk"], item["sk"]),
    )


def _runs(api: ApiHarness) -> list[dict[str, Any]]:
    answer = api.call_api("get_runs")
    assert answer.status == 200, answer.text
    runs: list[dict[str, Any]] = answer.json["runs"]
    return runs


def test_preview_saves_and_queues_one_dry_run_and_answers_its_run_id(firm: ApiHarness) -> None:
    answer = _preview(firm)

    assert answer.status == 202, answer.text
    run_id = answer.json["run_id"]
    assert answer.json == {"run_id": run_id}
    assert firm.queued() == [{"firm_id": FIRM, "trigger": "manual", "dry_run": True, "run_id": run_id}]
    run = RunLog(aws.table(firm.names.sync_log_table)).get_run(FIRM, run_id)
    assert run is not None
    assert (run.status, run.dry_run, run.trigger, run.finished_at) == ("running", True, "manual", None)
    assert run.counts["client"]["linked"] == 0, "a dry run counts what it would link"
    assert firm.config()["preview_pending"] is True


def test_the_preview_run_is_read_through_the_runs_api_like_any_run(firm: ApiHarness) -> None:
    run_id = _preview(firm).json["run_id"]

    listed = _runs(firm)
    detail = firm.call_api(
        "get_run", path=f"/integrations/xpm/runs/{run_id}", path_parameters={"run_id": run_id}
    )

    assert [(r["run_id"], r["dry_run"], r["status"]) for r in listed] == [(run_id, True, "running")]
    assert detail.status == 200
    assert (detail.json["dry_run"], detail.json["entries"], detail.json["entries_next_cursor"]) == (
        True,
        [],
        None,
    )


def test_preview_writes_nothing_to_active_and_changes_no_sync_state(firm: ApiHarness) -> None:
    before = _active_items(firm), firm.config()

    _preview(firm)

    config = firm.config()
    assert _active_items(firm) == before[0]
    changed = {k for k in config.keys() | before[1].keys() if config.get(k) != before[1].get(k)}
    assert changed == {"preview_pending", "preview_requested_at"}
    assert config["sync_enabled"] is False, "a preview turns on no schedule"


def test_a_double_click_queues_one_preview_and_answers_429_with_retry_after(firm: ApiHarness) -> None:
    first = _preview(firm)
    second = _preview(firm)

    assert first.status == 202
    assert second.status == 429
    assert second.json["error"]["code"] == "PREVIEW_TOO_SOON"
    assert second.json["retry_after"] == second.json["error"]["retry_after"] >= 60
    assert second.headers["Retry-After"] == str(second.json["retry_after"])
    assert len(firm.queued()) == 1
    assert len(_runs(firm)) == 1, "a refused press saves no run"


def test_within_five_minutes_of_the_last_preview_it_is_429_even_when_it_finished(firm: ApiHarness) -> None:
    _preview(firm)
    _preview_ended(firm)
    firm.clock.advance(100)

    answer = _preview(firm)

    assert answer.status == 429
    assert 195 <= answer.json["retry_after"] <= 201
    assert "5 minutes" in answer.json["error"]["message"]


def test_after_five_minutes_and_a_finished_preview_preview_works_again(firm: ApiHarness) -> None:
    _preview(firm)
    _preview_ended(firm)
    firm.clock.advance(5 * 60 + 1)

    assert _preview(firm).status == 202


def test_while_a_preview_is_queued_or_running_preview_stays_429_after_five_minutes(firm: ApiHarness) -> None:
    _preview(firm)
    firm.clock.advance(10 * 60)

    answer = _preview(firm)

    assert answer.status == 429
    assert answer.json["retry_after"] == 60
    assert "queued or running" in answer.json["error"]["message"]


def test_a_preview_pending_for_hours_no_longer_blocks_preview(firm: ApiHarness) -> None:
    _preview(firm)
    firm.clock.advance(7 * 3600)

    assert _preview(firm).status == 202


def test_preview_and_start_sync_do_not_hold_each_other(firm: ApiHarness) -> None:
    assert firm.call_api("post_sync").status == 202
    assert _preview(firm).status == 202
    assert firm.call_api("post_sync").status == 429, "Start Sync keeps its own gate"
    assert _preview(firm).status == 429


def test_preview_needs_a_connection(api: ApiHarness) -> None:
    answer = _preview(api)

    assert answer.status == 409
    assert answer.json["error"]["code"] == "NOT_CONNECTED"
    assert api.queued() == []
    assert api.config_item() is None


def test_after_disconnect_preview_is_409_not_connected(firm: ApiHarness) -> None:
    firm.call_api("delete_config")

    answer = _preview(firm)

    assert answer.status == 409
    assert answer.json["error"]["code"] == "NOT_CONNECTED"
    assert firm.queued() == []


def test_preview_before_the_setup_is_submitted_is_409_not_configured_and_queues_nothing(
    api: ApiHarness,
) -> None:
    api.connect()  # one practice: the tenant is preselected

    answer = _preview(api)

    assert answer.status == 409
    assert answer.json["error"]["code"] == "NOT_CONFIGURED"
    assert "default_office_code" in answer.json["error"]["message"]
    assert "notification_user_id" in answer.json["error"]["message"]
    assert api.queued() == []
    assert _runs(api) == []
    assert "preview_pending" not in api.config()


def test_the_preview_claim_itself_refuses_a_setup_that_lost_its_tenant(firm: ApiHarness) -> None:
    """A reconnect can clear the tenant between Preview's read and its write: the conditional
    write checks the setup too."""
    configs = ConfigRepository(aws.table(firm.names.config_table))
    configs.update(FIRM, tenant_id=None)

    with pytest.raises(NotConfigured) as refused:
        configs.claim_preview(FIRM, SystemClock())

    assert refused.value.missing == ["tenant_id"]
    assert "preview_pending" not in firm.config()


def test_preview_for_one_firm_does_not_block_another(firm: ApiHarness) -> None:
    firm.connect(OTHER_FIRM)
    firm.set_up(OFFICE, OTHER_FIRM)
    _preview(firm)

    answer = _preview(firm, OTHER_FIRM)

    assert answer.status == 202
    assert sorted(m["firm_id"] for m in firm.queued()) == [FIRM, OTHER_FIRM]


def test_a_queue_failure_gives_the_claim_back_and_leaves_no_run_looking_queued(
    firm: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(self: SyncQueue, firm_id: str, run_id: str) -> None:
        raise RuntimeError("SQS is down")

    with monkeypatch.context() as broken:
        broken.setattr(SyncQueue, "enqueue_preview", refused)
        failed = _preview(firm)
    runs = _runs(firm)
    retried = _preview(firm)

    assert failed.status == 500
    assert failed.json["error"]["code"] == "INTERNAL_ERROR"
    assert [(r["dry_run"], r["status"]) for r in runs] == [(True, "failed")]
    assert runs[0]["finished_at"] is not None
    assert retried.status == 202, "the claim was given back"
    assert len(firm.queued()) == 1


def test_a_preview_the_worker_runs_plans_the_first_sync_and_writes_nothing_to_active(api: ApiHarness) -> None:
    """The loop closed: the message the API queued is the one the worker runs as a dry run."""
    practice = api.sim.practices[0]
    seed_active_firm(
        boto3.resource("dynamodb").Table(api.names.active_table), FIRM, practice, office_code=OFFICE
    )
    api.connect()
    api.set_up(OFFICE)
    before = _active_items(api)

    run_id = _preview(api).json["run_id"]
    drain_queue(aws.client("sqs"), api.names.queue_url, worker_handler)

    detail = api.call_api(
        "get_run", path=f"/integrations/xpm/runs/{run_id}", path_parameters={"run_id": run_id}
    )
    assert detail.json["dry_run"] is True
    assert detail.json["status"] in ("success", "partial")
    planned = detail.json["counts"]["client"]
    assert planned["created"] > 0
    assert "linked" in planned
    assert _active_items(api) == before
    config = api.config()
    assert config["preview_pending"] is False, "the worker gave the gate back"
    assert "last_completed_run_started_at" not in config, "no sync state changed"


def test_a_preview_never_shows_as_the_firms_last_run(api: ApiHarness) -> None:
    """The probe of 2026-12-07: GET config's last_run was the newest run item, so a queued (then a
    finished) preview took the place of the firm's real last run."""
    practice = api.sim.practices[0]
    seed_active_firm(
        boto3.resource("dynamodb").Table(api.names.active_table), FIRM, practice, office_code=OFFICE
    )
    api.connect()
    api.set_up(OFFICE)
    assert api.call_api("post_sync").status == 202
    drain_queue(aws.client("sqs"), api.names.queue_url, worker_handler)
    before = api.call_api("get_config").json
    assert before["last_run"]["dry_run"] is False

    _preview(api)
    queued = api.call_api("get_config").json
    drain_queue(aws.client("sqs"), api.names.queue_url, worker_handler)
    finished = api.call_api("get_config").json

    assert queued == before
    assert finished == before


# --- The gate's rule (domain.preview) ------------------------------------------------------------

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _config(**values: Any) -> FirmConfig:
    return FirmConfig(firm_id=FIRM, status="connected", **values)


def test_a_refused_preview_waits_out_the_five_minutes_left() -> None:
    refusal = preview_refusal(_config(preview_requested_at=iso(NOW - timedelta(seconds=120))), NOW)

    assert isinstance(refusal, PreviewTooSoon)
    assert refusal.retry_after == 180


def test_a_refused_preview_while_one_is_pending_asks_again_in_a_minute_at_least() -> None:
    long_ago = iso(NOW - timedelta(minutes=30))

    refusal = preview_refusal(_config(preview_requested_at=long_ago, preview_pending=True), NOW)

    assert refusal.retry_after == 60


def test_a_pending_flag_older_than_the_stale_limit_no_longer_counts() -> None:
    stale = iso(NOW - timedelta(hours=7))

    refusal = preview_refusal(_config(preview_requested_at=stale, preview_pending=True), NOW)

    assert refusal.retry_after == 1, "the gate is open again: asking at once succeeds"
