"""The hourly dispatcher (SPEC B1, A6; issue 21): through its handler on moto, one scan of the
Config table queues the enabled firms' runs and the idle connections' keep-alives, and counts the
firms with no completed run for 3 hours."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from xpm_sync import composition
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.adapters.sync_queue import SyncQueue
from xpm_sync.domain.clock import iso
from xpm_sync.domain.runs import SyncRequest
from xpm_sync.observability import metrics

from functions.sync_dispatch.app import lambda_handler as dispatch_handler
from local.lambda_runtime import LocalContext, scheduled_event
from local.stack import StackNames, load_template

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


@pytest.fixture
def stack(aws: StackNames, monkeypatch: pytest.MonkeyPatch) -> Iterator[StackNames]:
    aws_clients.clear_clients()
    monkeypatch.setattr(composition, "clock", FixedClock(NOW))
    metrics.clear_metrics()
    yield aws
    metrics.clear_metrics()


def put_firm(stack: StackNames, firm_id: str, **values: Any) -> None:
    item = {
        "firm_id": firm_id,
        "status": "connected",
        "tenant_id": f"tenant-{firm_id}",
        "default_office_code": "MEL",
        "notification_user_id": "user-admin",
        "connected_at": iso(NOW - timedelta(days=90)),
        **values,
    }
    aws_clients.table(stack.config_table).put_item(Item={k: v for k, v in item.items() if v is not None})


def ago(**delta: float) -> str:
    return iso(NOW - timedelta(**delta))


def dispatch() -> dict[str, Any]:
    answer: dict[str, Any] = dispatch_handler(scheduled_event(NOW), LocalContext("SyncDispatchFunction"))
    return answer


def queued_messages(stack: StackNames) -> list[dict[str, Any]]:
    sqs = aws_clients.client("sqs")
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=stack.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=60
    ).get("Messages", []):
        messages.extend(batch)
    return messages


def emf_documents(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    lines = capsys.readouterr().out.splitlines()
    return [doc for doc in map(json.loads, filter(lambda line: line.startswith("{"), lines)) if "_aws" in doc]


def test_one_dispatch_queues_runs_and_keep_alives_and_counts_firms_without_a_completed_run(
    stack: StackNames, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given firms in every state the schedule tells apart
    put_firm(stack, "syncing", sync_enabled=True, last_completed_run_started_at=ago(hours=1))
    put_firm(stack, "stuck", sync_enabled=True, last_completed_run_started_at=ago(hours=5))
    put_firm(stack, "later-idle", sync_enabled=False, connected_at=ago(days=31))
    put_firm(stack, "later-fresh", sync_enabled=False, tokens_refreshed_at=ago(days=2))
    put_firm(stack, "broken", sync_enabled=True, status="needs_reconnect", connected_at=ago(days=61))
    put_firm(stack, "broken-untold", status="needs_reconnect", reconnect_notice_run_id="run-lost")
    put_firm(stack, "gone", sync_enabled=False, status="disconnected", connected_at=ago(days=61))
    # ... beside the table's other items: a one-time OAuth state and a token refresh lease
    aws_clients.table(stack.config_table).put_item(
        Item={"firm_id": "oauth-state#abc", "kind": "oauth_state", "state_firm_id": "x", "expires_at": 1}
    )
    aws_clients.table(stack.config_table).put_item(
        Item={"firm_id": "TOKENLOCK#syncing", "kind": "token_lock", "owner": "o", "expires_at": 1}
    )

    # When the hourly schedule fires
    answer = dispatch()

    # Then the enabled firms get a run, the idle connection a keep-alive, the lost connection whose
    # email is owed a notice, and nobody else anything
    bodies = sorted((json.loads(m["Body"]) for m in queued_messages(stack)), key=lambda b: b["firm_id"])
    assert bodies == [
        {"firm_id": "broken-untold", "notice": True, "trigger": "schedule"},
        {"firm_id": "later-idle", "keep_alive": True, "trigger": "schedule"},
        {"firm_id": "stuck", "trigger": "schedule"},
        {"firm_id": "syncing", "trigger": "schedule"},
    ]
    assert answer == {"queued": 2}
    # And the operators' signal counts the one firm that has not completed a run for 3 hours
    [document] = emf_documents(capsys)
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "XpmSync"
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert (document["FirmsQueued"], document["KeepAlivesQueued"], document["FirmsWithoutCompletedRun"]) == (
        [2.0],
        [1.0],
        [1.0],
    )


def test_the_keep_alive_is_a_sync_message_with_its_flag_in_the_firms_message_group(
    stack: StackNames,
) -> None:
    put_firm(stack, "later-idle", sync_enabled=False, connected_at=ago(days=31))

    dispatch()

    [message] = queued_messages(stack)
    request = SyncRequest.model_validate_json(message["Body"])
    assert (request.firm_id, request.trigger, request.keep_alive) == ("later-idle", "schedule", True)
    assert message["Attributes"]["MessageGroupId"] == "later-idle"
    assert message["Attributes"]["MessageDeduplicationId"].startswith("keep-alive.")


def test_a_notice_is_a_sync_message_with_its_flag_and_its_own_deduplication_id(stack: StackNames) -> None:
    put_firm(stack, "broken-untold", status="needs_reconnect", reconnect_notice_run_id="run-lost")

    dispatch()

    [message] = queued_messages(stack)
    request = SyncRequest.model_validate_json(message["Body"])
    assert (request.firm_id, request.notice, request.keep_alive) == ("broken-untold", True, False)
    assert message["Attributes"]["MessageGroupId"] == "broken-untold"
    assert message["Attributes"]["MessageDeduplicationId"].startswith("notice.")


def test_a_keep_alive_and_a_run_of_one_firm_never_deduplicate_each_other(stack: StackNames) -> None:
    # Given a keep-alive queued for a firm, and within 5 minutes a run of the same firm (say, the
    # admin presses Start Sync at once), then the same keep-alive again (the dispatch retried)
    queue = SyncQueue(aws_clients.client("sqs"), stack.queue_url)
    queue.enqueue_keep_alives(["firm-a"])
    queue.enqueue("firm-a", "schedule")
    queue.enqueue_many(["firm-a"], "schedule")
    queue.enqueue_keep_alives(["firm-a"])

    # Then the run and the keep-alive are both queued, each once
    bodies = [json.loads(m["Body"]) for m in queued_messages(stack)]
    assert sorted(bodies, key=len) == [
        {"firm_id": "firm-a", "trigger": "schedule"},
        {"firm_id": "firm-a", "keep_alive": True, "trigger": "schedule"},
    ]


@pytest.fixture
def dynamodb_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    calls: Counter[str] = Counter()
    original = BaseClient._make_api_call

    def counting_call(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        if self.meta.service_model.service_name == "dynamodb":
            calls[operation_name] += 1
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting_call)
    return calls


def test_the_dispatch_reads_the_config_table_once(stack: StackNames, dynamodb_calls: Counter[str]) -> None:
    # Given firms that need a run, a keep-alive and the operators' attention
    put_firm(stack, "syncing", sync_enabled=True, last_completed_run_started_at=ago(hours=1))
    put_firm(stack, "stuck", sync_enabled=True, last_completed_run_started_at=ago(hours=5))
    put_firm(stack, "later-idle", sync_enabled=False, connected_at=ago(days=31))
    dynamodb_calls.clear()

    dispatch()

    # Then one scan (one page for so small a table) served all three, and nothing else was read
    assert dynamodb_calls == Counter({"Scan": 1})


def put_tokens(stack: StackNames, firm_id: str, *, expires_at: datetime) -> None:
    aws_clients.client("secretsmanager").create_secret(
        Name=f"{stack.token_secret_prefix}{firm_id}",
        SecretString=json.dumps(
            {"access_token": "at", "refresh_token": "rt", "expires_at": int(expires_at.timestamp())}
        ),
    )


def test_firms_with_only_the_b3_attributes_get_exactly_their_b1_messages(stack: StackNames) -> None:
    """The probe of 2026-12-07: a connected firm that pressed Later, with nothing in its config saying
    when its tokens were refreshed, got a keep-alive on a guess every hour."""
    put_firm(stack, "enabled", sync_enabled=True, connected_at=None)
    put_firm(stack, "later", sync_enabled=False, connected_at=None)
    put_firm(stack, "later-fresh-tokens", sync_enabled=False, connected_at=None)
    put_tokens(stack, "later-fresh-tokens", expires_at=NOW + timedelta(minutes=20))

    dispatch()

    assert [json.loads(m["Body"]) for m in queued_messages(stack)] == [
        {"firm_id": "enabled", "trigger": "schedule"}
    ]


def test_an_idle_connection_whose_config_records_no_refresh_is_kept_alive_by_its_tokens_age(
    stack: StackNames,
) -> None:
    put_firm(stack, "idle", sync_enabled=False, connected_at=None)
    put_tokens(stack, "idle", expires_at=NOW - timedelta(days=31))

    dispatch()

    assert [json.loads(m["Body"]) for m in queued_messages(stack)] == [
        {"firm_id": "idle", "keep_alive": True, "trigger": "schedule"}
    ]


def test_a_token_secret_that_cannot_be_read_keeps_no_firm_from_its_run(stack: StackNames) -> None:
    # Given an enabled firm, and an idle one whose config records no refresh and whose secret is
    # scheduled for deletion (Secrets Manager refuses to read it)
    put_firm(stack, "enabled", sync_enabled=True)
    put_firm(stack, "idle-unreadable", sync_enabled=False, connected_at=None)
    put_tokens(stack, "idle-unreadable", expires_at=NOW - timedelta(days=31))
    aws_clients.client("secretsmanager").delete_secret(
        SecretId=f"{stack.token_secret_prefix}idle-unreadable", RecoveryWindowInDays=7
    )

    answer = dispatch()

    # Then the enabled firm's run is queued, and the unreadable one is left for the next hour
    assert answer == {"queued": 1}
    assert [json.loads(m["Body"]) for m in queued_messages(stack)] == [
        {"firm_id": "enabled", "trigger": "schedule"}
    ]


# --- one firm's odd data never costs the others their hour ---------------------------------------


@pytest.mark.parametrize(
    "odd",
    [
        {"sync_enabled": "enabled"},
        {"sync_enabled": 2},
        {"tenant_id": 7},
        {"last_failure_owner": "nobody"},
        {"connected_at": "yesterday"},
        {"sync_enabled": False, "tokens_refreshed_at": "last spring"},
    ],
    ids=lambda odd: ",".join(f"{k}={v!r}" for k, v in odd.items()),
)
def test_a_config_item_that_cannot_be_read_costs_no_other_firm_its_hour(
    stack: StackNames, odd: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Given, beside an enabled firm and an idle one due for its keep-alive, a firm whose item holds
    # a value written by hand that no config has (the probe of 2026-12-07, late: the dispatch
    # raised before queueing anything, every hour)
    put_firm(stack, "enabled", sync_enabled=True)
    put_firm(stack, "idle-due", sync_enabled=False, connected_at=ago(days=40))
    put_firm(stack, "odd", **{"sync_enabled": True, **odd})

    dispatch()

    # Then the others get their messages, and the operator is told which firm was passed over
    bodies = [json.loads(m["Body"]) for m in queued_messages(stack)]
    assert {"firm_id": "enabled", "trigger": "schedule"} in bodies
    assert {"firm_id": "idle-due", "keep_alive": True, "trigger": "schedule"} in bodies
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    named = getattr(record, "firm_id", None) or getattr(record, "firms", None)
    assert named in ("odd", ["odd"])
    assert all(str(value) not in record.getMessage() for value in odd.values())


@pytest.mark.parametrize(
    "expires_at",
    [str(int(NOW.timestamp() * 1000)), '"inf"', "1e400", "-99999999999999"],
    ids=["milliseconds", "inf", "overflowing", "far-past"],
)
def test_an_idle_connections_unreadable_token_expiry_is_kept_alive_and_costs_no_other_firm(
    stack: StackNames, expires_at: str
) -> None:
    # Given two idle connections whose configs record no refresh: one with an expiry that is no
    # date (the probe of 2026-12-07, late: the dispatch raised, and no firm got its keep-alive),
    # and one whose tokens are 31 days old
    put_firm(stack, "idle-odd", sync_enabled=False, connected_at=None)
    aws_clients.client("secretsmanager").create_secret(
        Name=f"{stack.token_secret_prefix}idle-odd",
        SecretString=f'{{"access_token": "at", "refresh_token": "rt", "expires_at": {expires_at}}}',
    )
    put_firm(stack, "idle-due", sync_enabled=False, connected_at=None)
    put_tokens(stack, "idle-due", expires_at=NOW - timedelta(days=31))

    dispatch()

    # Then both are kept alive: an expiry that cannot be read is read as long past, and the
    # refresh records a date the next hour can read
    kept_alive = sorted(json.loads(m["Body"])["firm_id"] for m in queued_messages(stack))
    assert kept_alive == ["idle-due", "idle-odd"]


# SQS's rule for a message group id (its documented quotas), which moto does not check.
_GROUP_ID = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}")


def _refusal(code: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "SendMessageBatch",
    )


@pytest.fixture(params=["each entry", "the whole request"])
def sqs_checking_group_ids(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQS refusing a message group id it cannot take: as a failed entry, or the whole request."""
    original = BaseClient._make_api_call

    def call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == "SendMessageBatch":
            entries = params["Entries"]
            good = [entry for entry in entries if _GROUP_ID.fullmatch(entry["MessageGroupId"])]
            if request.param == "the whole request" and len(good) < len(entries):
                raise _refusal("InvalidParameterValue")
            answer = original(client, operation, {**params, "Entries": good}) if good else {"Successful": []}
            answer["Failed"] = [
                {"Id": entry["Id"], "SenderFault": True, "Code": "InvalidParameterValue"}
                for entry in entries
                if entry not in good
            ]
            return answer
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", call)


@pytest.mark.parametrize("code", ["ThrottlingException", "QueueDoesNotExist", "KmsAccessDenied"])
def test_sqs_refusing_every_request_is_reported_without_splitting_the_batches(
    stack: StackNames, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    # Given SQS refusing every send for no message's fault (botocore's retries spent: throttled,
    # the queue gone, its key refused), and 25 enabled firms
    for number in range(25):
        put_firm(stack, f"firm-{number:02d}", sync_enabled=True)
    original = BaseClient._make_api_call
    sends: list[int] = []

    def call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == "SendMessageBatch":
            sends.append(len(params["Entries"]))
            raise _refusal(code)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", call)

    # Then the dispatch fails naming all of them, after one request per batch: sending each
    # message alone would only multiply the requests SQS is refusing
    with pytest.raises(Exception, match="SQS refused 25 of the hour's messages"):
        dispatch()
    assert sorted(sends) == [5, 10, 10]


@pytest.mark.usefixtures("sqs_checking_group_ids")
@pytest.mark.parametrize("odd", ["f" * 129, "firm one"], ids=["too long", "a space"])
def test_a_firm_whose_message_sqs_refuses_costs_no_other_firm_its_message(
    stack: StackNames, odd: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given 25 enabled firms, an idle one due for its keep-alive, and an enabled firm whose id SQS
    # cannot take as a message group (the probe of 2026-12-07, late: the dispatch raised midway,
    # cancelling the batches not yet sent, and queued no keep-alive)
    for number in range(25):
        put_firm(stack, f"firm-{number:02d}", sync_enabled=True)
    put_firm(stack, "idle-due", sync_enabled=False, connected_at=ago(days=40))
    put_firm(stack, odd, sync_enabled=True)

    # When the hour is dispatched, it fails (the operators' alarm) once everything else is sent
    with pytest.raises(Exception, match="SQS refused 1 of the hour's messages"):
        dispatch()

    bodies = [json.loads(m["Body"]) for m in queued_messages(stack)]
    assert sorted(body["firm_id"] for body in bodies if not body.get("keep_alive")) == [
        f"firm-{number:02d}" for number in range(25)
    ]
    assert [body["firm_id"] for body in bodies if body.get("keep_alive")] == ["idle-due"]
    [record] = [r for r in caplog.records if r.getMessage() == "SQS refused these firms' hourly messages"]
    assert getattr(record, "firms", None) == [odd]


def test_a_hung_sqs_connection_gives_up_long_before_the_dispatchers_timeout(stack: StackNames) -> None:
    # The review of 2026-12-07 (late): botocore's 60-second defaults let one hung connection, tried
    # twice, outlast the dispatcher's 120 s before it could report what it queued.
    config = aws_clients.client("sqs").meta.config
    timeout = load_template()["Resources"]["SyncDispatchFunction"]["Properties"]["Timeout"]

    assert (config.connect_timeout, config.read_timeout) == (5, 10)
    assert config.retries["total_max_attempts"] * (config.connect_timeout + config.read_timeout) < timeout


# The second read of 2026-12-08: the dispatcher read only part of each config, without the fields
# the 3 hours count from (the last completed run's end, the last Start Sync).
@pytest.mark.parametrize(
    "since",
    [
        # A daily full read that began 5 hours ago and completed a minute ago
        {"last_completed_run_started_at": ago(hours=5), "last_completed_run_finished_at": ago(minutes=1)},
        # Connected three days ago, saved with Later; Start Sync pressed five minutes ago
        {"connected_at": ago(days=3), "manual_requested_at": ago(minutes=5)},
    ],
    ids=["a long run in parts that just completed", "Start Sync just pressed"],
)
def test_a_firm_that_completed_or_started_a_run_within_3_hours_is_not_counted_by_the_dispatcher(
    stack: StackNames, capsys: pytest.CaptureFixture[str], since: dict[str, str]
) -> None:
    put_firm(stack, "recent", sync_enabled=True, **since)

    dispatch()

    [document] = emf_documents(capsys)
    assert document["FirmsWithoutCompletedRun"] == [0.0]
