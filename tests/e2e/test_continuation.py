"""A firm too large for one invocation: the run saves a checkpoint and queues its own continuation
(issue 6). The result must be the one a single long run gives: no duplicate, no lost record."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.composition.worker import sync_services
from xpm_sync.domain.runs import SyncRequest
from xpm_sync.settings import WorkerSettings, load_settings
from xpm_sync.sync import clients as client_sync
from xpm_sync.sync.engine import RunResult, SyncServices, run_sync

from functions.api.app import lambda_handler as api_handler
from functions.sync_worker import app as worker_app
from local.lambda_runtime import LocalContext
from local.xpm_sim import generate_practice
from tests.fixtures.events import load_event
from tests.fixtures.sync import SyncWorld


class TinyBudget:
    """Plenty of time until ``per_part`` clients were applied in this invocation, then none."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, per_part: int) -> None:
        self.per_part = per_part
        self.applied = 0
        original = client_sync.ClientSync.apply

        def counting_apply(sync: Any, client: Any) -> None:
            self.applied += 1
            original(sync, client)

        monkeypatch.setattr(client_sync.ClientSync, "apply", counting_apply)

    def new_invocation(self) -> None:
        self.applied = 0

    def remaining_seconds(self) -> float:
        return 0.0 if self.applied >= self.per_part else 900.0


def _take_continuation(world: SyncWorld) -> SyncRequest | None:
    sqs = aws_clients.client("sqs")
    messages = sqs.receive_message(QueueUrl=world.names.queue_url, MaxNumberOfMessages=10).get("Messages", [])
    for message in messages:
        sqs.delete_message(QueueUrl=world.names.queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert len(messages) <= 1
    return SyncRequest.model_validate(json.loads(messages[0]["Body"])) if messages else None


def _first_part(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch, *, per_part: int
) -> tuple[TinyBudget, SyncServices, RunResult]:
    """The run's first invocation, which runs out of time after ``per_part`` clients and queues its
    continuation."""
    budget = TinyBudget(monkeypatch, per_part=per_part)
    services = sync_services(load_settings(WorkerSettings), remaining_seconds=budget.remaining_seconds)
    first = run_sync(world.firm_id, "schedule", services)
    assert first is not None
    assert first.continued
    return budget, services, first


def assert_each_xpm_client_once(world: SyncWorld) -> None:
    """No duplicate, no lost record: one Active client per XPM client."""
    clients = world.items("client")
    assert Counter(c["xpm_uuid"] for c in clients) == Counter(c.uuid for c in world.practice.clients)


def assert_complete_with_no_checkpoint_left(world: SyncWorld) -> None:
    """The run in parts ended as one long run would: every XPM client once, nothing left to resume."""
    assert_each_xpm_client_once(world)
    assert world.config().checkpoint is None


def _next_part_to_the_end(world: SyncWorld, budget: TinyBudget, services: SyncServices) -> RunResult:
    """Deliver the queued continuation with all the time it needs; the run ends in success."""
    request = _take_continuation(world)
    assert request is not None
    budget.per_part = 10_000
    result = run_sync(request.firm_id, request.trigger, services, resume_run_id=request.resume_run_id)
    assert result is not None
    assert result.run.status == "success"
    return result


def _run_in_parts(world: SyncWorld, budget: TinyBudget) -> list[RunResult]:
    services = sync_services(load_settings(WorkerSettings), remaining_seconds=budget.remaining_seconds)
    results = []
    request: SyncRequest | None = SyncRequest(firm_id=world.firm_id, trigger="schedule")
    while request is not None:
        budget.new_invocation()
        result = run_sync(request.firm_id, request.trigger, services, resume_run_id=request.resume_run_id)
        assert result is not None
        results.append(result)
        request = _take_continuation(world)
    return results


def test_run_out_of_time_continues_in_parts_with_the_result_of_one_long_run(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = TinyBudget(monkeypatch, per_part=5)

    results = _run_in_parts(world, budget)

    total = len(world.practice.clients)
    assert len(results) == -(-total // 5), "one part per five clients"
    assert all(r.continued for r in results[:-1])
    assert not results[-1].continued
    runs = world.runs()
    assert len(runs) == 1, "the parts make one run"
    run = runs[0]
    assert run.status == "success"
    assert run.counts["client"] == {
        "created": total - 1,
        "updated": 1,
        "unchanged": 0,
        "failed": 0,
        "skipped": 0,
    }
    assert run.counts["user"]["created"] + run.counts["user"]["updated"] == len(world.practice.staff)
    assert_complete_with_no_checkpoint_left(world)


def test_continuation_after_xpm_reordered_the_list_applies_everything_again_without_duplicates(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget, services, _ = _first_part(world, monkeypatch, per_part=6)
    world.practice.clients.reverse()  # XPM answers in another order the next time

    _next_part_to_the_end(world, budget, services)

    assert_each_xpm_client_once(world)


def test_a_stale_continuation_does_nothing(world: SyncWorld) -> None:
    services = sync_services(load_settings(WorkerSettings), remaining_seconds=lambda: 900.0)

    assert run_sync(world.firm_id, "schedule", services, resume_run_id="20200101T000000Z-deadbeef") is None
    assert world.runs() == []


def test_a_run_in_many_parts_completes_through_the_queue_and_the_worker(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every part queues a message with the same body: SQS must not take the later ones for copies.
    total = len(world.practice.clients)
    budget = TinyBudget(monkeypatch, per_part=max(1, total // 5))

    def budget_of_a_new_invocation(context: Any) -> Any:
        budget.new_invocation()
        return budget.remaining_seconds

    monkeypatch.setattr(worker_app, "remaining_seconds", budget_of_a_new_invocation)

    deliveries = world.run_hourly()

    assert len(deliveries) >= 5
    [run] = world.runs()
    assert run.status == "success"
    assert_complete_with_no_checkpoint_left(world)


def test_a_request_arriving_between_parts_leaves_the_run_to_its_next_part(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget, services, first = _first_part(world, monkeypatch, per_part=5)
    budget.new_invocation()

    # The next hour's message (or Start Sync) is delivered before the run's next part.
    assert run_sync(world.firm_id, "schedule", services) is None

    _next_part_to_the_end(world, budget, services)
    assert [r.run_id for r in world.runs()] == [first.run.run_id]
    assert_each_xpm_client_once(world)


def test_a_continuation_lost_for_hours_no_longer_holds_up_new_runs(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget, services, first = _first_part(world, monkeypatch, per_part=5)
    _take_continuation(world)  # the next part's message is lost
    checkpoint = world.config().checkpoint
    assert checkpoint is not None
    long_ago = (datetime.now(UTC) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    aws_clients.table(world.names.config_table).update_item(
        Key={"firm_id": world.firm_id},
        UpdateExpression="SET checkpoint.saved_at = :t",
        ExpressionAttributeValues={":t": long_ago},
    )
    budget.per_part = 10_000
    budget.new_invocation()

    result = run_sync(world.firm_id, "schedule", services)

    assert result is not None
    assert result.run.status == "success"
    statuses = {r.run_id: r.status for r in world.runs()}
    assert statuses == {first.run.run_id: "failed", result.run.run_id: "success"}


def test_a_client_waiting_for_a_code_when_the_part_ends_is_retried_next_run(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.run_hourly()
    clean = world.clean_clients()
    taker, holder = clean[0], clean[2]  # in XPM's order
    code = holder.code
    world.practice.update_client(taker.uuid, ClientCode=code)
    world.practice.update_client(holder.uuid, ClientCode="MOVED001")
    budget = TinyBudget(monkeypatch, per_part=1)  # the part ends between the two

    results = _run_in_parts(world, budget)

    assert len(results) == 2
    assert world.client_by_uuid(holder.uuid)["code"] == "MOVED001"
    assert world.client_by_uuid(taker.uuid)["code"] != code
    assert world.runs()[0].status == "partial"
    assert taker.uuid in world.awaiting_retry(), "nothing is lost: it is retried"

    world.run_hourly()

    assert world.client_by_uuid(taker.uuid)["code"] == code
    assert world.last_run().status == "success"
    assert taker.uuid not in world.awaiting_retry()
    codes = [c.get("code") for c in world.items("client")]
    assert len(codes) == len(set(codes))


def _api(
    world: SyncWorld, case: str, body: Any = None, query: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """The admin's request through the API function (the sample event's query, unless given)."""
    extra: dict[str, Any] = {} if query is None else {"query": query}
    event = load_event("api", case, claims={"custom:firm_id": world.firm_id}, body=body, **extra)
    answer = api_handler(event, LocalContext("ApiFunction"))
    return int(answer["statusCode"]), json.loads(answer.get("body") or "{}")


def _second_practice(world: SyncWorld) -> str:
    second = generate_practice(11, staff=4, clients=20, problem_share=0, tenant_name="Second Practice")
    for client in second.clients:
        client.elements["ClientCode"] = f"B{client.elements['ClientCode']}"  # codes of its own
    world.sim.add_practice(second)
    return second.tenant_id


@pytest.mark.parametrize(
    ("change", "code"),
    [("disconnect", "XPM_NEEDS_RECONNECT"), ("tenant", "SYNC_SETUP_CHANGED")],
)
def test_a_part_dropped_after_a_disconnect_or_tenant_change_ends_its_run_and_frees_start_sync(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch, change: str, code: str
) -> None:
    """The probe of 2026-12-07: the dropped part left its run 'running' and Start Sync answered 429
    "a sync is running" for six hours, after a reconnect too (the hourly sync, turned off, never came
    to close it)."""
    # Given a run between two parts, its next part queued
    budget, services, first = _first_part(world, monkeypatch, per_part=5)

    # When the admin disconnects (or picks another practice), and then the next part is delivered
    if change == "disconnect":
        assert _api(world, "delete_config")[0] == 200
    else:
        body = {
            "sync_name": "XPM sync",
            "tenant_id": _second_practice(world),
            "default_office_code": world.firm.office_code,
            "notification_user_id": world.firm.admin_user_id,
        }
        assert _api(world, "put_config", body)[0] == 200
    request = _take_continuation(world)
    assert request is not None
    budget.new_invocation()
    assert run_sync(request.firm_id, request.trigger, services, resume_run_id=request.resume_run_id) is None

    # Then the run is ended, saying why, and nothing holds the firm's next Start Sync
    [run] = world.runs()
    assert run.run_id == first.run.run_id
    assert run.status == "failed"
    assert [e.code for e in world.entries(run) if e.entity == "run"] == [code]
    config = world.config()
    assert (config.running_run_id, config.checkpoint) == (None, None)
    if change == "tenant":
        # and it is the latest run for the run-level problems (SPEC B6)
        status, answer = _api(world, "get_problems", query={"entity": "run"})
        assert status == 200, answer
        assert [(p["entity"], p["code"]) for p in answer["problems"] if p["entity"] == "run"] == [
            ("run", code)
        ]
        status, answer = _api(world, "post_sync")
        assert status == 202, answer
