"""The handlers as a caller that knows only SPEC B drives them: no context, a stub context, a
minimal scheduled event; and XPM edge answers that must not stop a firm's sync."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.sync import engine

from functions.sync_dispatch.app import lambda_handler as dispatch_handler
from functions.sync_worker.app import lambda_handler as worker_handler
from tests.fixtures.events import sqs_record
from tests.fixtures.logs import powertools_json_log
from tests.fixtures.sync import SyncWorld


def _sqs_event(world: SyncWorld, body: dict[str, str]) -> dict[str, Any]:
    return {"Records": [sqs_record("m-1", world.firm_id, body)]}


def test_worker_runs_a_full_sync_with_no_context(world: SyncWorld) -> None:
    answer = worker_handler(_sqs_event(world, {"firm_id": world.firm_id, "trigger": "manual"}), None)

    assert answer == {"batchItemFailures": []}
    run = world.last_run()
    assert run.status == "success"
    assert run.trigger == "manual"
    assert len(world.items("client")) == len(world.practice.clients)


def test_a_stub_context_with_milliseconds_left_is_no_deadline(world: SyncWorld) -> None:
    stub: Any = SimpleNamespace(
        function_name="worker",
        memory_limit_in_mb=128,
        invoked_function_arn="arn:aws:lambda:ap-southeast-2:123456789012:function:worker",
        aws_request_id="req-1",
        get_remaining_time_in_millis=lambda: 5,
    )

    worker_handler(_sqs_event(world, {"firm_id": world.firm_id, "trigger": "schedule"}), stub)

    assert world.last_run().status == "success"
    assert world.config().checkpoint is None


def test_dispatcher_accepts_a_minimal_scheduled_event_and_no_context(world: SyncWorld) -> None:
    answer = dispatch_handler({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, None)

    assert answer == {"queued": 1}
    sqs = aws_clients.client("sqs")
    [message] = sqs.receive_message(QueueUrl=world.names.queue_url, AttributeNames=["All"])["Messages"]
    assert json.loads(message["Body"]) == {"firm_id": world.firm_id, "trigger": "schedule"}
    assert message["Attributes"]["MessageGroupId"] == world.firm_id


def test_archived_xpm_client_links_the_client_entered_by_hand_with_its_code(world: SyncWorld) -> None:
    code = world.firm.hand_made_client_code
    xpm_client = next(c for c in world.practice.clients if c.code == code)
    world.practice.archive_client(xpm_client.uuid)

    world.run_hourly()

    linked = [c for c in world.items("client") if c.get("code") == code]
    assert len(linked) == 1
    assert linked[0]["client_id"] == world.firm.hand_made_client_id
    assert linked[0]["xpm_uuid"] == xpm_client.uuid
    assert linked[0]["xpm_archived"] is True


def test_a_failed_client_xpm_no_longer_lists_is_retried_from_its_copy_until_the_daily_full_read(
    world: SyncWorld,
) -> None:
    # Given a client that fails (no partner, no default partner), then leaves XPM's list
    client = world.practice.clients[5]
    world.practice.update_client(client.uuid, AccountManager=None)
    world.run_hourly()
    assert world.awaiting_retry() == {client.uuid}
    world.practice.clients.remove(world.practice.client(client.uuid))

    # When the next hourly run goes, it retries the kept copy, asking XPM nothing for it
    world.run_hourly()
    assert world.last_run().counts["client"]["failed"] == 1
    assert world.sim.calls_to("client.api/get") == []

    # Then the daily full read, which no longer sees it, drops the retry and closes its problem
    day_ago = (datetime.now(UTC) - timedelta(hours=25)).strftime("%Y-%m-%dT%H:%M:%SZ")
    aws_clients.table(world.names.config_table).update_item(
        Key={"firm_id": world.firm_id},
        UpdateExpression="SET last_full_read_started_at = :t",
        ExpressionAttributeValues={":t": day_ago},
    )
    world.run_hourly()

    assert world.last_run().full_read is True
    assert world.last_run().status == "success"
    assert world.awaiting_retry() == set()
    assert world.open_problems() == {}


def test_a_configured_firm_with_no_status_recorded_is_synced(world: SyncWorld) -> None:
    aws_clients.table(world.names.config_table).update_item(
        Key={"firm_id": world.firm_id},
        UpdateExpression="REMOVE #s",
        ExpressionAttributeNames={"#s": "status"},
    )

    deliveries = world.run_hourly()

    assert [body["firm_id"] for d in deliveries for body in d.bodies] == [world.firm_id]
    assert world.last_run().status == "success"


def test_a_disconnected_firm_is_not_synced(world: SyncWorld) -> None:
    aws_clients.table(world.names.config_table).update_item(
        Key={"firm_id": world.firm_id},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": "disconnected"},
    )

    answer = worker_handler(_sqs_event(world, {"firm_id": world.firm_id, "trigger": "manual"}), None)

    assert answer == {"batchItemFailures": []}
    assert world.runs() == []
    assert world.items("client") == [c for c in world.items("client") if not c.get("xpm_uuid")]


def test_a_body_that_can_never_run_is_reported_failed_not_raised_and_logged(world: SyncWorld) -> None:
    for body in (
        "not json",
        json.dumps({"firm_id": world.firm_id, "trigger": "cron"}),
        json.dumps({"firm_id": ""}),
        # Nested deeper than json.loads can follow (the probe of 2026-12-07, late: RecursionError
        # failed the whole event, unpaced and unlogged)
        '{"firm_id": ' + "[" * 3000 + "]" * 3000 + "}",
    ):
        event = _sqs_event(world, {"firm_id": world.firm_id, "trigger": "manual"})
        event["Records"][0]["body"] = body
        event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "\u00b3"  # a digit, not decimal

        with powertools_json_log() as log:
            answer = worker_handler(event, None)

        assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}, body
        # The probe of 2026-12-07: nothing said why such a record went back to SQS, then the DLQ
        logged = [json.loads(line) for line in log.getvalue().splitlines()]
        assert [(line["message"], line["message_id"]) for line in logged if line["level"] == "ERROR"] == [
            ("sync message that cannot be read", "m-1")
        ], body
    assert world.runs() == []


def test_a_lone_record_whose_run_fails_for_now_is_reported_for_sqs_to_retry(world: SyncWorld) -> None:
    world.sim.faults.add("unavailable", times=None)

    answer = worker_handler(_sqs_event(world, {"firm_id": world.firm_id, "trigger": "schedule"}), None)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert world.last_run().status == "failed"


def test_an_enabled_firm_with_no_status_and_no_practice_is_queued_and_the_worker_runs_nothing(
    world: SyncWorld,
) -> None:
    # SPEC B1: one message per firm whose sync is enabled; the worker decides whether it can sync.
    aws_clients.table(world.names.config_table).update_item(
        Key={"firm_id": world.firm_id},
        UpdateExpression="REMOVE #s, tenant_id",
        ExpressionAttributeNames={"#s": "status"},
    )
    runs_before = len(world.runs())

    deliveries = world.run_hourly()

    assert [body["firm_id"] for d in deliveries for body in d.bodies] == [world.firm_id]
    assert [d.failed for d in deliveries] == [[]]
    assert len(world.runs()) == runs_before
    assert world.sim.calls_to("/practicemanager/") == []


def test_a_record_that_can_never_run_holds_up_no_other_firms_record_whatever_its_group(
    world: SyncWorld,
) -> None:
    # Given a batch built by a caller that gave every record one message group: first a body that
    # names no firm, then the world firm's run (the probe of 2026-12-07: the second was failed too)
    unreadable = sqs_record("m-1", "group-1", {})
    unreadable["body"] = "not json"
    runnable = sqs_record("m-2", "group-1", {"firm_id": world.firm_id, "trigger": "manual"})
    event = {"Records": [unreadable, runnable]}

    answer = worker_handler(event, None)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert world.last_run().status == "success"


def test_a_run_that_cannot_record_its_end_is_logged_retried_and_closed_by_the_next(
    world: SyncWorld,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the sync log refuses the run's last writes (the probe of 2026-12-07: a key DynamoDB
    # refused escaped as the run ended, with no log line, and the run stayed running)
    def refused(*_: object, **__: object) -> None:
        raise RuntimeError("the sync log refused the run's end")

    with monkeypatch.context() as patched:
        patched.setattr(engine, "_finish", refused)
        answer = worker_handler(_sqs_event(world, {"firm_id": world.firm_id, "trigger": "schedule"}), None)

    # Then SQS gets the record back, and CloudWatch says which firm's run and why
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    (record,) = [r for r in caplog.records if r.getMessage() == "sync run stopped without recording its end"]
    assert record.levelno == logging.ERROR
    assert getattr(record, "firm_id", None) == world.firm_id
    assert record.exc_info is not None
    assert "the sync log refused the run's end" in str(record.exc_info[1])
    # and its metrics page as an internal error (the worker answered, so Lambda's Errors did not move)
    lines = capsys.readouterr().out.splitlines()
    emitted = [json.loads(line) for line in lines if line.startswith('{"_aws"')]
    assert [(doc["InternalErrorRuns"], doc["firm_id"]) for doc in emitted] == [([1.0], world.firm_id)]
    stuck = world.last_run()
    assert stuck.status == "running"

    # And the next delivery closes it and syncs
    worker_handler(_sqs_event(world, {"firm_id": world.firm_id, "trigger": "schedule"}), None)
    assert {run.run_id: run.status for run in world.runs()}[stuck.run_id] == "failed"
    assert world.last_run().status == "success"


def test_a_firms_later_record_still_waits_behind_its_failed_one(world: SyncWorld) -> None:
    world.sim.faults.add("unavailable", times=None)
    body = {"firm_id": world.firm_id, "trigger": "schedule"}
    event = {"Records": [sqs_record("m-1", world.firm_id, body), sqs_record("m-2", world.firm_id, body)]}

    answer = worker_handler(event, None)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}, {"itemIdentifier": "m-2"}]}
    assert len(world.runs()) == 1


def test_an_event_with_no_records_is_answered_with_no_failures() -> None:
    assert worker_handler({"Records": []}, None) == {"batchItemFailures": []}
    assert worker_handler({}, None) == {"batchItemFailures": []}
