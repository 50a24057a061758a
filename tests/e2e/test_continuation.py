"""A firm too large for one invocation: the run saves a checkpoint and queues its own continuation
(issue 6). The result must be the one a single long run gives: no duplicate, no lost record."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from xpm_sync import aws as aws_clients
from xpm_sync.queue import SyncRequest
from xpm_sync.settings import WorkerSettings, load_settings
from xpm_sync.sync import clients as client_sync
from xpm_sync.sync.engine import RunResult, run_sync
from xpm_sync.wiring import sync_services

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
    clients = world.items("client")
    assert Counter(c["xpm_uuid"] for c in clients) == Counter(c.uuid for c in world.practice.clients)
    assert world.config().checkpoint is None


def test_continuation_after_xpm_reordered_the_list_applies_everything_again_without_duplicates(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = TinyBudget(monkeypatch, per_part=6)
    services = sync_services(load_settings(WorkerSettings), remaining_seconds=budget.remaining_seconds)
    first = run_sync(world.firm_id, "schedule", services)
    assert first is not None
    assert first.continued
    world.practice.clients.reverse()  # XPM answers in another order the next time
    request = _take_continuation(world)
    assert request is not None

    budget.per_part = 10_000
    result = run_sync(request.firm_id, request.trigger, services, resume_run_id=request.resume_run_id)

    assert result is not None
    assert result.run.status == "success"
    clients = world.items("client")
    assert Counter(c["xpm_uuid"] for c in clients) == Counter(c.uuid for c in world.practice.clients)


def test_a_stale_continuation_does_nothing(world: SyncWorld) -> None:
    services = sync_services(load_settings(WorkerSettings), remaining_seconds=lambda: 900.0)

    assert run_sync(world.firm_id, "schedule", services, resume_run_id="20200101T000000Z-deadbeef") is None
    assert world.runs() == []
