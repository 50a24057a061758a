"""What the hourly schedule does for each firm (SPEC A6, B1; issue 21's operator signal), from the
firm's config alone: ``domain.hourly``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from xpm_sync.domain.clock import iso
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.hourly import (
    KEEP_ALIVE_AFTER,
    NO_COMPLETED_RUN_AFTER,
    due_for_keep_alive,
    due_for_sync,
    owed_reconnect_notice,
    plan_hour,
    without_completed_run,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def ago(delta: timedelta) -> str:
    return iso(NOW - delta)


def firm(**values: Any) -> FirmConfig:
    base: dict[str, Any] = {
        "firm_id": "firm-a",
        "status": "connected",
        "tenant_id": "tenant-1",
        "default_office_code": "MEL",
        "connected_at": ago(timedelta(days=90)),
    }
    base.update(values)
    # As the scan reads it: an attribute the item does not have is absent, not None.
    return FirmConfig.model_validate({key: value for key, value in base.items() if value is not None})


# --- SPEC B1: one sync message per firm whose sync is enabled -------------------------------------


def test_an_enabled_connected_firm_is_queued_for_its_hourly_sync() -> None:
    assert due_for_sync(firm(sync_enabled=True))


@pytest.mark.parametrize("status", ["needs_reconnect", "disconnected", "not_connected"])
def test_an_enabled_firm_whose_connection_is_broken_or_gone_is_not_queued(status: str) -> None:
    assert not due_for_sync(firm(sync_enabled=True, status=status))


def test_an_enabled_firm_written_before_status_existed_is_queued_even_without_a_tenant() -> None:
    # The worker runs nothing for it (FirmConfig.can_sync), as for any firm that cannot sync.
    assert due_for_sync(firm(sync_enabled=True, status=None, tenant_id=None))


def test_a_lost_connection_whose_email_is_owed_gets_a_notice_and_nothing_else() -> None:
    owed = firm(sync_enabled=True, status="needs_reconnect", reconnect_notice_run_id="run-1")

    plan = plan_hour([owed], NOW)

    assert owed_reconnect_notice(owed)
    assert (plan.notice_firm_ids, plan.sync_firm_ids, plan.keep_alive_firm_ids) == (["firm-a"], [], [])


@pytest.mark.parametrize("status", ["connected", "disconnected", "not_connected"])
def test_a_notice_is_owed_only_while_the_connection_stays_lost(status: str) -> None:
    # Reconnected, or disconnected by the admin, since: nobody is told to reconnect
    assert not owed_reconnect_notice(firm(status=status, reconnect_notice_run_id="run-1"))
    assert not owed_reconnect_notice(firm(status="needs_reconnect"))


def test_a_firm_that_pressed_later_is_not_queued_for_a_sync() -> None:
    assert not due_for_sync(firm(sync_enabled=False))


# --- SPEC A6: the keep-alive of a connection left idle ---------------------------------------------


def test_a_connection_left_idle_for_30_days_is_kept_alive() -> None:
    # Given a firm that pressed Later: connected, not syncing, tokens last refreshed 30 days ago
    config = firm(sync_enabled=False, tokens_refreshed_at=ago(KEEP_ALIVE_AFTER))

    # Then the schedule refreshes its tokens before Xero's 60 days run out
    assert due_for_keep_alive(config, NOW)


def test_a_connection_refreshed_within_30_days_is_left_alone() -> None:
    config = firm(sync_enabled=False, tokens_refreshed_at=ago(KEEP_ALIVE_AFTER - timedelta(minutes=1)))

    assert not due_for_keep_alive(config, NOW)


def test_tokens_never_refreshed_count_from_when_the_firm_connected() -> None:
    assert due_for_keep_alive(firm(sync_enabled=False, connected_at=ago(timedelta(days=31))), NOW)
    assert not due_for_keep_alive(firm(sync_enabled=False, connected_at=ago(timedelta(days=29))), NOW)


def test_a_connection_with_no_recorded_refresh_is_judged_by_its_stored_tokens_expiry() -> None:
    # A config written by hand (or before these attributes existed): nothing is queued on a guess
    # (SPEC B1), the stored access token's expiry says when the tokens were last refreshed.
    config = firm(sync_enabled=False, connected_at=None)

    assert not due_for_keep_alive(config, NOW)
    stale = int((NOW - timedelta(days=31)).timestamp())
    fresh = int((NOW - timedelta(days=29)).timestamp())
    assert due_for_keep_alive(config, NOW, stored_expires_at=stale)
    assert not due_for_keep_alive(config, NOW, stored_expires_at=fresh)


def test_a_firm_that_syncs_hourly_needs_no_keep_alive() -> None:
    # Its runs refresh its tokens (access tokens live 30 minutes).
    assert not due_for_keep_alive(firm(sync_enabled=True, tokens_refreshed_at=ago(timedelta(days=45))), NOW)


@pytest.mark.parametrize("status", ["needs_reconnect", "disconnected", "not_connected"])
def test_a_firm_that_is_not_connected_has_nothing_to_keep_alive(status: str) -> None:
    assert not due_for_keep_alive(firm(sync_enabled=False, status=status), NOW)


def test_a_firm_written_before_status_existed_is_kept_alive_once_it_has_a_tenant() -> None:
    assert due_for_keep_alive(firm(sync_enabled=False, status=None), NOW)
    assert not due_for_keep_alive(firm(sync_enabled=False, status=None, tenant_id=None), NOW)


# --- Issue 21: firms with no completed run for 3 hours ---------------------------------------------


def test_an_enabled_firm_whose_last_completed_run_began_3_hours_ago_is_counted() -> None:
    config = firm(sync_enabled=True, last_completed_run_started_at=ago(NO_COMPLETED_RUN_AFTER))

    assert without_completed_run(config, NOW)


def test_an_enabled_firm_that_completed_a_run_within_3_hours_is_not_counted() -> None:
    config = firm(
        sync_enabled=True, last_completed_run_started_at=ago(NO_COMPLETED_RUN_AFTER - timedelta(minutes=1))
    )

    assert not without_completed_run(config, NOW)


def test_a_firm_reconnected_since_its_last_completed_run_counts_from_the_reconnect() -> None:
    reconnected = firm(
        sync_enabled=True,
        last_completed_run_started_at=ago(timedelta(days=30)),
        connected_at=ago(timedelta(hours=1)),
    )

    assert not without_completed_run(reconnected, NOW)


def test_a_firm_whose_last_run_ended_within_3_hours_is_not_counted_however_long_it_ran() -> None:
    long_run = firm(
        sync_enabled=True,
        last_completed_run_started_at=ago(timedelta(hours=5)),
        last_completed_run_finished_at=ago(timedelta(minutes=1)),
    )

    assert not without_completed_run(long_run, NOW)


def test_a_firm_whose_admin_pressed_start_sync_within_3_hours_is_not_counted() -> None:
    # Connected days ago and saved with Later: the sync starts at Start Sync, not at the connection
    started = firm(
        sync_enabled=True, connected_at=ago(timedelta(days=3)), manual_requested_at=ago(timedelta(minutes=5))
    )

    assert not without_completed_run(started, NOW)


def test_a_firm_that_never_completed_a_run_counts_from_when_it_connected() -> None:
    assert without_completed_run(firm(sync_enabled=True, connected_at=ago(timedelta(hours=4))), NOW)
    assert not without_completed_run(firm(sync_enabled=True, connected_at=ago(timedelta(hours=2))), NOW)


@pytest.mark.parametrize(
    "values",
    [
        {"sync_enabled": False},  # Later, or paused: it is not meant to run
        {"sync_enabled": True, "status": "needs_reconnect"},  # its admin reconnects
        {"sync_enabled": True, "status": "disconnected"},
        {"sync_enabled": True, "tenant_id": None},  # setup unfinished: SYNC_NOT_CONFIGURED, the firm's
        {"sync_enabled": True, "default_office_code": None},
        {"sync_enabled": True, "last_failure_owner": "firm"},  # e.g. its default office deleted
    ],
)
def test_firms_that_are_not_meant_to_complete_runs_are_not_counted(values: dict[str, Any]) -> None:
    assert not without_completed_run(firm(**values), NOW)


def test_a_firm_whose_last_run_failed_on_the_systems_fault_is_counted() -> None:
    config = firm(sync_enabled=True, connected_at=ago(timedelta(hours=4)), last_failure_owner="system")

    assert without_completed_run(config, NOW)


def test_the_plan_sorts_every_firm_in_one_pass() -> None:
    configs = [
        firm(firm_id="syncing", sync_enabled=True, last_completed_run_started_at=ago(timedelta(hours=1))),
        firm(firm_id="stuck", sync_enabled=True, last_completed_run_started_at=ago(timedelta(hours=5))),
        firm(firm_id="idle", sync_enabled=False, tokens_refreshed_at=ago(timedelta(days=40))),
        firm(firm_id="fresh", sync_enabled=False, tokens_refreshed_at=ago(timedelta(days=1))),
        firm(firm_id="broken", sync_enabled=True, status="needs_reconnect"),
    ]

    plan = plan_hour(configs, NOW)

    assert plan.sync_firm_ids == ["syncing", "stuck"]
    assert plan.keep_alive_firm_ids == ["idle"]
    assert plan.firms_without_completed_run == 1
