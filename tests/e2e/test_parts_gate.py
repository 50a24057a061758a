"""A manual run in parts and Start Sync's gate (SPEC A6, B5), through the handlers. Found by the
probe of 2026-12-08."""

from __future__ import annotations

import pytest

from functions.sync_worker.app import lambda_handler as worker_handler
from local.lambda_runtime import LocalContext
from tests.e2e.test_manual_runs import admins_run_whose_second_part_failed, one_record, start_sync
from tests.fixtures.sync import SyncWorld

pytestmark = pytest.mark.e2e


def test_the_redelivered_part_of_an_ended_manual_run_does_not_reopen_start_sync_for_a_queued_one(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the admin's first sync, run in parts, whose second part meets an XPM outage: the run
    # ends failed, SQS delivers the part again in 5 min
    clock, continuation = admins_run_whose_second_part_failed(world, monkeypatch)

    # When the admin presses Start Sync again (the run failed, the cooldown is over): queued
    clock.advance(6 * 60)
    assert start_sync(world.firm_id).status == 202
    assert world.config().run_pending is True

    # and the failed part's redelivery comes first (it holds the firm's FIFO group)
    again = worker_handler(one_record(continuation, receive_count=2), LocalContext("SyncWorkerFunction"))
    assert again == {"batchItemFailures": []}

    # Then the admin's new run is still queued: Start Sync answers 429 (SPEC A6)
    assert world.config().run_pending is True, "the stale part released the new run's claim"
    clock.advance(6 * 60)
    answer = start_sync(world.firm_id)
    assert answer.status == 429, answer.text


def test_a_run_whose_first_part_stops_at_a_dripping_staff_list_keeps_the_staff_problems_open(
    world: SyncWorld, scaled: object
) -> None:
    from xpm_sync.adapters import aws as aws_clients
    from xpm_sync.adapters.sync_log import RecordStates

    # Given a staff member XPM has without a surname (an open problem after the first run)
    member = world.practice.staff[-1]
    world.practice.update_staff(member.uuid, Name="Cher")
    world.run_hourly()
    user_problems = {k: v for k, v in world.open_problems().items() if k.startswith("user#")}
    assert user_problems, world.open_problems()

    # When the next hour's staff list drips past the first part's reading deadline, once
    world.sim.faults.add("drip", times=1, path="staff.api/list", part="headers", bytes=16, every=0.5)
    deliveries = world.run_hourly()
    assert len(deliveries) == 2, "the first part stopped, its continuation finished the run"

    # Then the staff member still failing is still an open problem, not "fixed" (SPEC B6), and
    # the run that met it is partial with it in its log and counts (SPEC A5)
    still = {k: v for k, v in world.open_problems().items() if k.startswith("user#")}
    fixed = list(RecordStates(aws_clients.table(world.names.sync_log_table), world.firm_id).fixed_after(None))
    run = world.last_run()
    assert still == user_problems, f"closed as fixed: {fixed}"
    assert run.counts["user"]["failed"] == 1, run.counts
    assert run.status == "partial"
