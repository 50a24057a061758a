"""SPEC A6: "Tokens of a connected firm that were not refreshed for 30 days (Later, or paused) are
refreshed by the hourly schedule, so a connection never expires unused."

End to end through the handlers: the scheduled event into the dispatcher, the SQS FIFO queue (moto),
the worker, Xero's token endpoint (the simulator over HTTP).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from moto.ses.models import ses_backends
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.domain.clock import iso, parse_iso

from functions.sync_dispatch.app import lambda_handler as dispatch_handler
from functions.sync_worker.app import lambda_handler as worker_handler
from local.lambda_runtime import Delivery, LocalContext, drain_queue, scheduled_event
from tests.fixtures.sync import SyncWorld

pytestmark = pytest.mark.e2e

KEEP_ALIVE_BODY = {"firm_id": "firm-sync-test", "trigger": "schedule", "keep_alive": True}


def press_later(world: SyncWorld, *, connected_days_ago: float, **values: Any) -> None:
    """The firm connected that long ago and pressed Later: connected, its hourly sync off."""
    connected_at = iso(datetime.now(UTC) - timedelta(days=connected_days_ago))
    names = ", ".join(f"{key} = :{key}" for key in ("sync_enabled", "connected_at", *values))
    aws_clients.table(world.names.config_table).update_item(
        Key={"firm_id": world.firm_id},
        UpdateExpression=f"SET {names}",
        ExpressionAttributeValues={":sync_enabled": False, ":connected_at": connected_at}
        | {f":{key}": value for key, value in values.items()},
    )


def stored_refresh_token(world: SyncWorld) -> str:
    secret = aws_clients.client("secretsmanager").get_secret_value(
        SecretId=f"{world.names.token_secret_prefix}{world.firm_id}"
    )
    token = json.loads(secret["SecretString"])["refresh_token"]
    assert isinstance(token, str)
    return token


def test_an_idle_connection_is_refreshed_by_the_hourly_schedule_and_nothing_runs(world: SyncWorld) -> None:
    # Given a firm that connected 31 days ago and pressed Later: no run has refreshed its tokens
    press_later(world, connected_days_ago=31)
    refresh_token_before = stored_refresh_token(world)
    world.sim.reset_calls()

    # When the hourly schedule fires
    deliveries = world.run_hourly()

    # Then the worker got one keep-alive and refreshed the firm's tokens at Xero, with no XPM call
    assert [(d.bodies, d.failed) for d in deliveries] == [([KEEP_ALIVE_BODY], [])]
    assert [call.path for call in world.sim.calls] == ["/connect/token"]
    assert stored_refresh_token(world) != refresh_token_before, "the rotated refresh token is stored"
    # And no run was recorded, the firm is still connected, and the refresh is noted in its config
    assert world.runs() == []
    config = world.config()
    assert (config.status, config.sync_enabled) == ("connected", False)
    assert config.tokens_refreshed_at is not None
    assert datetime.now(UTC) - parse_iso(config.tokens_refreshed_at) < timedelta(minutes=1)

    # And the next hour there is nothing to keep alive
    assert world.run_hourly() == []


def test_a_connection_refreshed_within_30_days_is_left_alone(world: SyncWorld) -> None:
    press_later(world, connected_days_ago=90, tokens_refreshed_at=iso(datetime.now(UTC) - timedelta(days=29)))
    world.sim.reset_calls()

    assert world.run_hourly() == []
    assert world.sim.calls == []


def test_a_keep_alive_xero_refuses_is_a_failed_run_asking_to_reconnect_and_is_not_retried(
    world: SyncWorld, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a Later firm whose refresh token Xero has already dropped (61 days unused)
    press_later(world, connected_days_ago=61)
    world.sim.advance_time(61 * 24 * 3600)

    # When the hourly schedule's keep-alive meets invalid_grant
    deliveries = world.run_hourly()

    # Then the firm must reconnect (SPEC A8): marked so, logged, recorded as a failed run with its
    # run-level entry (the admin reads it in Sync Monitoring, and is emailed), not retried by SQS
    assert [(d.bodies, d.failed) for d in deliveries] == [([KEEP_ALIVE_BODY], [])]
    assert world.config().status == "needs_reconnect"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "Xero refused to refresh an idle connection; the firm must reconnect" in warnings
    [run] = world.runs()
    assert run.status == "failed"
    assert [e.code for e in world.entries(run)] == ["XPM_NEEDS_RECONNECT"]
    assert world.open_problems() == {"run": {"XPM_NEEDS_RECONNECT"}}
    [email] = ses_backends["123456789012"]["ap-southeast-2"].sent_messages
    assert "could not complete" in email.body
    # And the schedule stops asking: a firm that needs to reconnect has nothing to keep alive
    assert world.run_hourly() == []


def test_a_keep_alive_xero_cannot_answer_now_fails_its_record_for_sqs_to_retry(
    world: SyncWorld, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a Later firm due for a keep-alive, and Xero's token endpoint down
    press_later(world, connected_days_ago=31)
    world.sim.faults.add("unavailable", times=None, path="/connect/token")
    events: list[dict[str, Any]] = []

    def worker(event: dict[str, Any], context: Any) -> Any:
        events.append(event)
        return worker_handler(event, context)

    # When the hourly schedule fires (the worker's events kept, to deliver again)
    dispatch_handler(scheduled_event(), LocalContext("SyncDispatchFunction"))
    deliveries = drain_queue(aws_clients.client("sqs"), world.names.queue_url, worker)

    # Then the record fails, for SQS to deliver again, and the firm stays connected, not yet refreshed
    assert [(d.bodies, d.failed) for d in deliveries] == [([KEEP_ALIVE_BODY], [KEEP_ALIVE_BODY])]
    # and the operator reads why, for which firm (the operators' probe of 2026-12-07, late: no line)
    [failed] = [r for r in caplog.records if r.getMessage() == "keep-alive refresh failed"]
    assert (failed.levelname, getattr(failed, "firm_id", None)) == ("ERROR", world.firm_id)
    config = world.config()
    assert (config.status, config.tokens_refreshed_at) == ("connected", None)

    # And once Xero answers again, SQS's next delivery refreshes the tokens
    world.sim.faults.clear()
    redelivered = redeliver(world, events, worker)
    assert [(d.bodies, d.failed) for d in redelivered] == [([KEEP_ALIVE_BODY], [])]
    assert world.config().tokens_refreshed_at is not None


def redeliver(world: SyncWorld, events: list[dict[str, Any]], worker: Any) -> list[Delivery]:
    """The visibility timeout of the failed records runs out: SQS delivers them again."""
    sqs = aws_clients.client("sqs")
    for event in events:
        for record in event["Records"]:
            sqs.change_message_visibility(
                QueueUrl=world.names.queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
            )
    return drain_queue(sqs, world.names.queue_url, worker)


def test_a_firm_that_syncs_hourly_gets_its_run_and_no_keep_alive(world: SyncWorld) -> None:
    # Given an enabled firm connected long ago whose tokens were never noted as refreshed
    aws_clients.table(world.names.config_table).update_item(
        Key={"firm_id": world.firm_id},
        UpdateExpression="SET connected_at = :at",
        ExpressionAttributeValues={":at": iso(datetime.now(UTC) - timedelta(days=90))},
    )
    world.sim.expire_access_tokens()

    # When the hour's run goes
    [delivery] = world.run_hourly()

    # Then its run is the only message, and the run's own refresh is noted for the schedule
    assert delivery.bodies == [{"firm_id": world.firm_id, "trigger": "schedule"}]
    assert world.last_run().status == "success"
    assert world.config().tokens_refreshed_at is not None


def test_a_config_that_records_no_refresh_is_kept_alive_by_its_stored_tokens_age(world: SyncWorld) -> None:
    # Given a firm that pressed Later, whose config says neither when it connected nor when its
    # tokens were refreshed (a config written as SPEC B3 lists it), and whose stored access token
    # expired 31 days ago
    aws_clients.table(world.names.config_table).update_item(
        Key={"firm_id": world.firm_id},
        UpdateExpression="SET sync_enabled = :off REMOVE connected_at, tokens_refreshed_at",
        ExpressionAttributeValues={":off": False},
    )
    secrets = aws_clients.client("secretsmanager")
    secret_id = f"{world.names.token_secret_prefix}{world.firm_id}"
    stored = json.loads(secrets.get_secret_value(SecretId=secret_id)["SecretString"])
    month_old = int((datetime.now(UTC) - timedelta(days=31)).timestamp())
    secrets.put_secret_value(SecretId=secret_id, SecretString=json.dumps({**stored, "expires_at": month_old}))

    # When the hourly schedule fires
    deliveries = world.run_hourly()

    # Then its tokens are refreshed, and the next hour leaves them alone
    assert [(d.bodies, d.failed) for d in deliveries] == [([KEEP_ALIVE_BODY], [])]
    assert stored_refresh_token(world) != stored["refresh_token"]
    assert world.config().tokens_refreshed_at is not None
    assert world.run_hourly() == []
