"""The admin's Start Sync through the handlers (SPEC A6, B1, B5): the API's gate and the worker's
run, on moto's SQS FIFO queue and the XPM simulator over HTTP. Found by the probe of 2026-12-08."""

from __future__ import annotations

import json
from typing import Any

import pytest
from xpm_sync import composition
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.adapters.xpm.client import XpmApi
from xpm_sync.composition import worker as worker_composition
from xpm_sync.composition.worker import sync_services
from xpm_sync.settings import WorkerSettings, load_settings
from xpm_sync.sync.engine import run_sync

from functions.api.app import lambda_handler as api_handler
from functions.sync_dispatch.app import lambda_handler as dispatch_handler
from functions.sync_worker.app import lambda_handler as worker_handler
from local.lambda_runtime import LocalContext, _sqs_record, scheduled_event
from tests.e2e.test_continuation import TinyBudget
from tests.fixtures.api import ADMIN_SUB, Answer, FakeLambdaContext, MovableClock, answer_of
from tests.fixtures.sync import SyncWorld

pytestmark = pytest.mark.e2e


def start_sync(firm_id: str) -> Answer:
    event = {
        "httpMethod": "POST",
        "path": "/integrations/xpm/sync",
        "body": None,
        "requestContext": {
            "authorizer": {"claims": {"custom:firm_id": firm_id, "cognito:groups": "admin", "sub": ADMIN_SUB}}
        },
    }
    return answer_of(api_handler(event, FakeLambdaContext()))


def one_record(body: dict[str, Any], receive_count: int = 1) -> dict[str, Any]:
    """An SQS event of one record, as Lambda's event source delivers it."""
    return {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "r-1",
                "body": json.dumps(body),
                "attributes": {
                    "ApproximateReceiveCount": str(receive_count),
                    "MessageGroupId": body["firm_id"],
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
            }
        ]
    }


def test_start_sync_answers_429_while_the_admins_run_waits_behind_an_hourly_run_that_failed(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC A6: "Start Sync while a run is queued or running ... answers 429". The hourly run ahead
    of the admin's in the firm's queue failed on an XPM outage (SQS delivers it again in 5
    minutes); its end reopened Start Sync, and a second manual run was queued behind the first."""
    clock = MovableClock()
    monkeypatch.setattr(composition, "clock", clock)
    monkeypatch.setattr(worker_composition, "XpmApi", lambda **kw: XpmApi(**{**kw, "sleep": lambda s: None}))
    sqs = aws_clients.client("sqs")
    dispatch_handler(scheduled_event(), LocalContext("SyncDispatchFunction"))  # the hourly message
    assert start_sync(world.firm_id).status == 202

    world.sim.faults.add("unavailable", times=None, path="client.api/list")
    queue_arn = sqs.get_queue_attributes(QueueUrl=world.names.queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    (hourly,) = sqs.receive_message(
        QueueUrl=world.names.queue_url, MaxNumberOfMessages=1, AttributeNames=["All"]
    )["Messages"]
    assert json.loads(hourly["Body"]) == {"firm_id": world.firm_id, "trigger": "schedule"}
    answer = worker_handler({"Records": [_sqs_record(hourly, queue_arn)]}, LocalContext("SyncWorkerFunction"))
    assert len(answer["batchItemFailures"]) == 1  # delivered again later, the admin's run behind it
    world.sim.faults.clear()

    clock.advance(6 * 60)  # past Start Sync's 5-minute cooldown
    again = start_sync(world.firm_id)
    assert again.status == 429, again.text
    assert again.json["error"]["code"] == "SYNC_TOO_SOON"


def test_the_admins_run_failing_on_its_last_delivery_reopens_start_sync(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_composition, "XpmApi", lambda **kw: XpmApi(**{**kw, "sleep": lambda s: None}))
    world.update_config(run_pending=True)
    world.sim.faults.add("unavailable", times=None, path="client.api/list")
    manual = {"firm_id": world.firm_id, "trigger": "manual"}

    first = worker_handler(one_record(manual, receive_count=1), LocalContext("SyncWorkerFunction"))
    assert len(first["batchItemFailures"]) == 1
    assert world.config().run_pending is True, "SQS delivers the admin's run again"
    last = worker_handler(one_record(manual, receive_count=3), LocalContext("SyncWorkerFunction"))
    assert len(last["batchItemFailures"]) == 1  # to the dead-letter queue
    assert world.config().run_pending is False


def test_the_worker_runs_the_admins_record_for_a_firm_saved_with_later(world: SyncWorld) -> None:
    """SPEC B1: one sync run per record; Later pauses the hourly sync (SPEC A6), not the admin's."""
    world.update_config(sync_enabled=False)

    answer = worker_handler(
        one_record({"firm_id": world.firm_id, "trigger": "manual"}), LocalContext("SyncWorkerFunction")
    )

    assert answer == {"batchItemFailures": []}
    assert [run.trigger for run in world.runs()] == ["manual"]


def drained(world: SyncWorld) -> list[dict[str, Any]]:
    sqs = aws_clients.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=world.names.queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=world.names.queue_url, ReceiptHandle=message["ReceiptHandle"])


def admins_run_whose_second_part_failed(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> tuple[MovableClock, dict[str, Any]]:
    """Start Sync, the admin's run in parts (two clients a part), and its second part meeting an
    XPM outage: the run ends failed, and SQS will deliver that part again. The API's clock, and the
    part's message body."""
    clock = MovableClock()
    monkeypatch.setattr(composition, "clock", clock)
    monkeypatch.setattr(worker_composition, "XpmApi", lambda **kw: XpmApi(**{**kw, "sleep": lambda s: None}))
    assert start_sync(world.firm_id).status == 202
    (manual,) = drained(world)
    assert manual["trigger"] == "manual"

    budget = TinyBudget(monkeypatch, per_part=2)
    services = sync_services(load_settings(WorkerSettings), remaining_seconds=budget.remaining_seconds)
    first = run_sync(world.firm_id, "manual", services, delivered_again_on_failure=True)
    assert first is not None
    assert first.continued
    (continuation,) = drained(world)
    assert continuation.get("resume_run_id") == first.run.run_id

    world.sim.faults.add("unavailable", times=None, path="client.api/list")
    failed = worker_handler(one_record(continuation, receive_count=1), LocalContext("SyncWorkerFunction"))
    assert len(failed["batchItemFailures"]) == 1  # SQS delivers it again
    world.sim.faults.clear()
    assert world.last_run().status == "failed"
    return clock, continuation


def test_a_manual_run_whose_continuation_fails_on_an_outage_does_not_hold_start_sync_for_hours(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin's first sync runs in parts (a large practice). Its second part meets an XPM 503:
    the run ends failed, and SQS delivers the part again in 5 minutes. That delivery finds the run
    ended (checkpoint gone) and does nothing. Nothing was queued or running any more, yet Start
    Sync answered 429 "already queued or running" for 6 hours. The second read of 2026-12-08."""
    clock, continuation = admins_run_whose_second_part_failed(world, monkeypatch)

    again = worker_handler(one_record(continuation, receive_count=2), LocalContext("SyncWorkerFunction"))
    assert again == {"batchItemFailures": []}  # the stale part is dropped
    assert drained(world) == []  # nothing queued
    assert world.config().running_run_id is None  # nothing running

    clock.advance(10 * 60)  # well past the 5-minute cooldown
    answer = start_sync(world.firm_id)
    assert answer.status == 202, answer.text


def test_a_record_that_does_not_say_its_receive_count_is_not_assumed_to_come_back(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC B1 describes records by their body alone. A record without attributes (Lambda's always
    have them) was taken as a first delivery, so a manual run failing on an outage kept Start Sync
    shut for 6 hours, even on what was in fact its last delivery. The second read of 2026-12-08."""
    clock = MovableClock()
    monkeypatch.setattr(composition, "clock", clock)
    monkeypatch.setattr(worker_composition, "XpmApi", lambda **kw: XpmApi(**{**kw, "sleep": lambda s: None}))
    assert start_sync(world.firm_id).status == 202
    (manual,) = drained(world)
    world.sim.faults.add("unavailable", times=None, path="client.api/list")
    record = one_record(manual)
    del record["Records"][0]["attributes"]
    for _ in range(3):  # the queue's three deliveries, then the dead-letter queue
        assert len(worker_handler(record, LocalContext("SyncWorkerFunction"))["batchItemFailures"]) == 1
    world.sim.faults.clear()

    clock.advance(10 * 60)
    answer = start_sync(world.firm_id)
    assert answer.status == 202, answer.text
