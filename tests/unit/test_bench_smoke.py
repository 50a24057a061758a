"""The benchmark's measurement code at a tiny size, so it cannot rot between `make bench` runs."""

from __future__ import annotations

import gc
import io
import json
import os
import random
import sysconfig
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Attr, Key
from moto import mock_aws
from moto.dynamodb import models as moto_dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.sqs.models import Queue, sqs_backends

from bench import run as bench_run
from bench.harness import (
    STACK_FLOOR_MODULE,
    STACK_FLOOR_SOURCE,
    add_firm,
    bench_stack,
    change_clients,
    count_records,
    globals_environment,
    import_packages,
    libraries_module_source,
    measure_baseline,
    measure_dispatch,
    measure_failing_firm,
    measure_firm_day,
    measure_sync,
    modules_loaded_by,
    parse_importtime,
    project_self_ms,
)
from bench.moto_process import (
    _add_message_deduplicated_by_index,
    _all_items,
    _delete_item,
    _lazy_queue_attributes,
    _moto_query,
    _put_item,
    _query_by_key,
    _TablesCopiedByReference,
    _transact_write_items,
    _update_item,
    _ValueIndex,
    serve_commands,
)
from bench.report import day_table, failing_table, incremental_table
from bench.run import evaluate, failing_targets, summarize_day
from local.write_counts import items_read, tables_of

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       310 |        310 |   _io
import time:       691 |       1630 | _frozen_importlib_external
import time:      9935 |      15570 | site
import time:       100 |        100 | functions
import time:       200 |        200 | functions.sync_worker
import time:       500 |        500 |     json.decoder
import time:      1000 |       1500 |   json
import time:       300 |     200300 |   boto3
import time:     10000 |     211800 | functions.sync_worker.app
"""


def test_importtime_sums_the_handlers_top_level_imports() -> None:
    total, heaviest = parse_importtime(IMPORTTIME, "functions.sync_worker.app")
    assert total == 212.1  # functions + functions.sync_worker + functions.sync_worker.app, in ms
    assert heaviest[0] == ("boto3", 200.3)
    assert [name for name, _ in heaviest] == ["boto3", "json"]  # not site's own imports


def test_the_projects_share_of_an_import_is_its_own_modules_self_time() -> None:
    trace = """\
import time: self [us] | cumulative | imported package
import time:      2000 |       2000 |       pydantic
import time:      7000 |       9000 |     xpm_sync.domain.firm
import time:       300 |        300 |     xpm_sync_extras
import time:      1000 |      10300 |   xpm_sync
import time:      4000 |      14300 | app
"""
    # app, xpm_sync and xpm_sync.domain.firm; not pydantic, which firm imported, nor a look-alike.
    assert project_self_ms(trace) == 12.0


def test_loaded_modules_come_in_the_order_their_imports_began(tmp_path: Path) -> None:
    # json's import begins before json.decoder's and ends after it: sys.modules would say otherwise.
    loaded = modules_loaded_by("import json", cwd=tmp_path, env=dict(os.environ))
    assert "json.decoder" in loaded
    assert loaded.index("json") < loaded.index("json.decoder")


def test_the_libraries_module_imports_in_the_order_given_and_skips_unknown_names() -> None:
    source = libraries_module_source(["json.decoder", "no_such_module_anywhere", "json"])
    namespace: dict[str, object] = {}
    exec(compile(source, "handler_libraries.py", "exec"), namespace)  # noqa: S102  # the bench's own code
    assert source.index("'json.decoder'") < source.index("'json'")
    assert import_packages(["boto3.dynamodb", "json", "boto3", "pydantic.main"]) == [
        "boto3",
        "json",
        "pydantic",
    ]


def test_the_stack_floor_loads_the_stack_and_nothing_of_the_project(tmp_path: Path) -> None:
    (tmp_path / f"{STACK_FLOOR_MODULE}.py").write_text(STACK_FLOOR_SOURCE)
    path = os.pathsep.join([str(tmp_path), sysconfig.get_paths()["purelib"]])
    loaded = modules_loaded_by(
        f"import {STACK_FLOOR_MODULE}", cwd=tmp_path, env={**os.environ, "PYTHONPATH": path}
    )
    packages = set(import_packages(loaded))
    assert {"botocore", "httpx", "pydantic", "aws_lambda_powertools"} <= packages
    assert "botocore.client" in loaded
    assert not packages & {"xpm_sync", "functions", "boto3", "aws_xray_sdk", "defusedxml"}


def test_handlers_are_imported_with_the_templates_global_variables() -> None:
    variables = globals_environment()
    assert variables["POWERTOOLS_SERVICE_NAME"] == "xpm-sync"
    assert variables["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
    assert variables["POWERTOOLS_LOG_LEVEL"] == "INFO"  # prod's, looked up per environment


def test_bench_measures_the_real_path_at_a_tiny_size(monkeypatch: pytest.MonkeyPatch) -> None:
    with bench_stack() as bench:
        firm = add_firm(bench, 50, staff=10)
        first = measure_sync(bench, firm)
        rerun = measure_sync(bench, firm)
        day = measure_firm_day(bench, firm, hours=2, share=0.02)
        users, offices = count_records(bench, firm, "USER#"), count_records(bench, firm, "OFFICE#")
        changed = change_clients(firm, share=0.04)
        incremental = measure_sync(bench, firm)
        baseline = measure_baseline(bench, firm, items=first["active_writes"])
        dispatch = measure_dispatch(bench, 15)

    assert first["status"] == "success"
    assert first["full_read"] is True
    assert first["counts"]["client"]["created"] == 50
    assert first["active_writes"] >= 50
    assert first["peak_rss_mb"] > 0
    assert first["records_per_second"] > 0
    assert first["xpm_bytes"] == sum(first["xpm_bytes_by_endpoint"].values()) > rerun["xpm_bytes"] > 0
    assert rerun["active_writes"] == 0
    assert rerun["sim_xpm_endpoints"] == {"staff.api/list": 1, "client.api/list": 1}
    # A quiet hour reads the firm's users and offices from Active, and no client.
    assert (users, offices) == (11, 1)  # ten staff and the seeded admin
    assert rerun["active_items_read"] == users + offices
    # Each hour reads its own change from XPM (the day's hours are simulated), nothing more.
    assert [run["changed"] for run in day] == [1, 1]
    assert [sum(run["counts"]["client"].values()) for run in day] == [1, 1]
    assert all(run["sim_xpm_endpoints"] == {"staff.api/list": 1, "client.api/list": 1} for run in day)
    assert incremental["active_writes"] == changed == 2
    # By key: the changed clients, which the first sync created, found under the ids it derived from
    # their XPM UUIDs in one BatchGetItem: no index query, and no lookup by code (each already holds
    # its code), on top of users and offices.
    assert incremental["active_items_read"] == users + offices + changed
    assert incremental["active_requests"]["Query"] == rerun["active_requests"]["Query"]
    assert incremental["active_requests"]["BatchGetItem"] == 1
    # Their updates go out together, each on its own condition, in one transaction.
    assert incremental["active_requests"]["TransactWriteItems"] == 1
    assert "UpdateItem" not in incremental["active_requests"]
    assert baseline["items"] == first["active_writes"]
    assert baseline["bytes"] > 0
    assert dispatch["queued"] == dispatch["messages_on_queue"] == 15
    assert dispatch["timeout_seconds"] > 0

    results: dict[str, Any] = {
        "sizes": {
            "50": {
                "runs": {"first": first, "rerun": rerun, "daily": first, "incremental": incremental},
                "baseline": baseline,
                "ratio": first["seconds"] / baseline["seconds"],
                "changed": changed,
                "users": users,
                "offices": offices,
                "day": summarize_day(day, first),
            }
        },
        "imports": [{"module": "functions.sync_worker.app", "ms": 250.0}],
        "dispatch": dispatch,
    }
    assert results["sizes"]["50"]["day"]["bytes"] == first["xpm_bytes"] + sum(run["xpm_bytes"] for run in day)
    monkeypatch.setattr(bench_run, "INCREMENTAL_TIME_SIZE", 50)
    verdicts = {t.name: t.passed for t in evaluate(results)}
    assert verdicts["50: rerun, nothing changed writes 0 items"] is True
    assert verdicts["50: no-change rerun makes the minimum XPM calls"] is True
    assert verdicts["50: incremental run writes only the changed items"] is True
    assert verdicts["50: Active items read by the incremental run"] is True
    assert "50: incremental run's wall time vs the no-change rerun" in verdicts
    assert verdicts["50: bytes downloaded from XPM per firm-day"] is True
    assert verdicts["worker cold-start import"] is True
    # An invocation that measured no import (--only sizes) judges the targets it measured.
    assert "worker cold-start import" not in {t.name for t in evaluate({**results, "imports": []})}
    assert "| 50 | 2 | 1 |" in day_table(results)
    assert "| 50 | 2 | 14 | 11 + 1 | 1.00 |" in incremental_table(results)


def test_bench_measures_a_firm_with_failing_clients_at_a_tiny_size() -> None:
    with bench_stack() as bench:
        failing = measure_failing_firm(bench, 20, share=0.2, staff=10)

    first, retry, fixed = (failing["runs"][name] for name in ("first", "retry", "fixed"))
    assert failing["failing"] == 4
    assert first["status"] == "partial"
    assert (first["counts"]["client"]["created"], first["counts"]["client"]["failed"]) == (16, 4)
    # Retried from the copies kept in the sync log: no XPM call beyond the two lists, nothing written
    # to Active, the states and entries rewritten in the sync log.
    assert retry["sim_xpm_endpoints"] == {"staff.api/list": 1, "client.api/list": 1}
    assert retry["active_writes"] == 0
    assert retry["counts"]["client"]["failed"] == 4
    assert retry["sync_log"]["items_read"] >= 4
    assert retry["sync_log"]["items_written"] >= 4
    assert fixed["status"] == "success"
    assert fixed["counts"]["client"]["created"] == 4
    assert fixed["sim_xpm_endpoints"] == {"staff.api/list": 1, "client.api/list": 1}
    for run in (first, retry, fixed):
        assert 0 < run["config_item_bytes"] == run["largest_item_bytes"]["config"]
        assert 0 < run["largest_item_bytes"]["sync_log"] < 64 * 1024
    verdicts = {t.name: t.passed for t in failing_targets(failing)}
    assert all(verdicts.values()), verdicts
    assert "Firm of 20 clients, 4 of them" in failing_table(failing)


def test_items_read_counts_the_items_an_answer_returns_from_one_table() -> None:
    assert items_read("active", "Query", {"TableName": "active"}, {"Items": [{}, {}], "Count": 2}) == 2
    assert items_read("active", "Query", {"TableName": "config"}, {"Items": [{}]}) == 0
    assert items_read("active", "GetItem", {"TableName": "active"}, {"Item": {"pk": {"S": "x"}}}) == 1
    assert items_read("active", "GetItem", {"TableName": "active"}, {}) == 0
    batch: dict[str, Any] = {"Responses": {"active": [{}, {}, {}], "config": [{}]}}
    assert items_read("active", "BatchGetItem", {"RequestItems": {"active": {}, "config": {}}}, batch) == 3
    assert tables_of("BatchGetItem", {"RequestItems": {"active": {}, "config": {}}}) == {"active", "config"}
    assert items_read("active", "UpdateItem", {"TableName": "active"}, {"Attributes": {}}) == 0


def test_bench_moto_queue_attributes_answer_as_moto_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's lazy ``Queue.attributes`` (moto_process) gives moto's own answers."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name="eu-west-1")
        dlq = sqs.create_queue(QueueName="dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        queue_url = sqs.create_queue(
            QueueName="sync.fifo",
            Attributes={
                "FifoQueue": "true",
                "ContentBasedDeduplication": "true",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}),
            },
        )["QueueUrl"]
        for firm in ("a", "b", "a"):  # the second "a" is a duplicate inside the dedup window
            sqs.send_message(
                QueueUrl=queue_url, MessageBody=json.dumps({"firm_id": firm}), MessageGroupId=firm
            )
        sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)
        queue = sqs_backends["123456789012"]["eu-west-1"].get_queue("sync.fifo")
        moto_answer = dict(queue.attributes)

        monkeypatch.setattr(Queue, "attributes", property(_lazy_queue_attributes))
        lazy_answer = dict(queue.attributes)
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"firm_id": "a"}), MessageGroupId="a")
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"firm_id": "c"}), MessageGroupId="c")
        after = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]

    assert lazy_answer == moto_answer
    assert lazy_answer["ContentBasedDeduplication"] == "true"
    assert after["ApproximateNumberOfMessages"] == "2"  # "b" and "c"; the second "a" deduplicated
    assert after["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert json.loads(after["RedrivePolicy"])["maxReceiveCount"] == 3


def test_bench_moto_settles_by_freezing_what_it_holds_and_says_so() -> None:
    """Before each measured job the bench has moto freeze its heap (``settle``): a job's requests
    are then not charged for the collector walking every item stored before it."""
    held = [{"pk": f"FIRM#{n}", "name": [n]} for n in range(1_000)]  # stands for moto's stored items
    gc.unfreeze()
    before = gc.get_freeze_count()
    answers = io.StringIO()
    try:
        serve_commands(io.StringIO("settle\nunknown\nsettle\n"), answers)
        frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert answers.getvalue() == "SETTLED\nSETTLED\n"  # one answer per settle, none for the rest
    assert frozen - before >= len(held)  # the held items (and their lists) now out of the walks


def test_bench_moto_deduplicates_fifo_messages_by_index_as_sqs_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Queue, "add_message", _add_message_deduplicated_by_index)
    with mock_aws():
        sqs = boto3.client("sqs", region_name="eu-west-1")
        queue_url = sqs.create_queue(
            QueueName="sync.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        )["QueueUrl"]

        def send(firm: str, deduplication_id: str | None = None) -> None:
            extra = {"MessageDeduplicationId": deduplication_id} if deduplication_id else {}
            sqs.send_message(QueueUrl=queue_url, MessageBody=firm, MessageGroupId=firm, **extra)

        def bodies() -> list[str]:
            answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
            return sorted(message["Body"] for message in answer.get("Messages", []))

        send("a")
        send("b")
        send("a")  # same content within 5 minutes: dropped
        send("a", deduplication_id="explicit-1")  # an explicit id of its own: kept
        send("c", deduplication_id="explicit-1")  # that id again: dropped
        assert bodies() == ["a", "a", "b"]

        while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        send("b")  # deleted since, but SQS still remembers the id for 5 minutes
        assert bodies() == []


def _install_fast_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto_process's reads by key, as the bench's moto server installs them."""
    monkeypatch.setattr(Table, "query", _query_by_key)
    monkeypatch.setattr(Table, "all_items", _all_items)
    monkeypatch.setattr(Table, "put_item", _put_item)
    monkeypatch.setattr(Table, "delete_item", _delete_item)
    monkeypatch.setattr(DynamoDBBackend, "update_item", _update_item)


def _table_with_code_index() -> Any:
    """A table keyed as Active is (pk, sk), with a global index by (pk, code), on moto in process."""
    client = boto3.client("dynamodb", region_name="eu-west-1")
    client.create_table(
        TableName="t",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "code")],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_code",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "code", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    return boto3.resource("dynamodb", region_name="eu-west-1").Table("t")


def _moto_answers(monkeypatch: pytest.MonkeyPatch | None) -> list[list[dict[str, Any]]]:
    """A few queries of the kinds the sync makes (prefix pages both ways, index equalities), before
    and after writes that move an item in and out of an index, on moto in process."""
    if monkeypatch is not None:
        _install_fast_reads(monkeypatch)
    answers: list[list[dict[str, Any]]] = []
    with mock_aws():
        table = _table_with_code_index()
        for firm in ("A", "B"):
            for number in range(30):
                kind = ("CLIENT", "USER", "OFFICE")[number % 3]
                table.put_item(
                    Item={
                        "pk": f"FIRM#{firm}",
                        "sk": f"{kind}#{number:03d}",
                        "code": f"C{number % 7}",
                        "n": number,
                    }
                )

        def pages(**request: Any) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            while True:
                answer = table.query(**request)
                found += answer["Items"]
                if "LastEvaluatedKey" not in answer:
                    return found
                request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

        def by_code(code: str) -> list[dict[str, Any]]:
            return pages(
                IndexName="by_code",
                KeyConditionExpression=Key("pk").eq("FIRM#A") & Key("code").eq(code),
                FilterExpression=Attr("n").gt(3),
            )

        for forward in (True, False):
            answers.append(
                pages(
                    KeyConditionExpression=Key("pk").eq("FIRM#A") & Key("sk").begins_with("CLIENT#"),
                    ScanIndexForward=forward,
                    Limit=4,
                )
            )
        answers.append(pages(KeyConditionExpression=Key("pk").eq("FIRM#B"), Limit=7))
        answers += [by_code("C3"), by_code("C9")]
        for moved in ("CLIENT#006", "CLIENT#024"):  # into the index under C9, one out of C3
            table.update_item(
                Key={"pk": "FIRM#A", "sk": moved},
                UpdateExpression="SET code = :c",
                ExpressionAttributeValues={":c": "C9"},
            )
        table.delete_item(Key={"pk": "FIRM#A", "sk": "USER#010"})
        table.put_item(Item={"pk": "FIRM#A", "sk": "USER#099", "code": "C3", "n": 99})
        answers += [by_code("C3"), by_code("C9")]
    return answers


def test_bench_moto_reads_by_key_answer_as_moto_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's reads by key range and by index value (moto_process) give moto's own answers."""
    moto_answers = _moto_answers(None)
    assert _moto_answers(monkeypatch) == moto_answers
    assert [len(answer) for answer in moto_answers] == [10, 10, 30, 3, 0, 2, 2]


def _transaction_outcomes(monkeypatch: pytest.MonkeyPatch | None) -> list[Any]:
    """Transactions of updates as the sync sends them (a code moved, a name set, each on a
    condition), one that succeeds and one that fails on its last update, then what the table and
    its code index hold, on moto in process."""
    if monkeypatch is not None:
        _install_fast_reads(monkeypatch)
        monkeypatch.setattr(DynamoDBBackend, "transact_write_items", _transact_write_items)
        monkeypatch.setattr(moto_dynamodb_models, "copy", _TablesCopiedByReference())
    outcomes: list[Any] = []
    with mock_aws():
        table = _table_with_code_index()
        for number in range(6):
            table.put_item(Item={"pk": "FIRM#A", "sk": f"CLIENT#{number}", "code": f"C{number}"})
        client = boto3.client("dynamodb", region_name="eu-west-1")

        def update(number: int, code: str) -> dict[str, Any]:
            return {
                "Update": {
                    "TableName": "t",
                    "Key": {"pk": {"S": "FIRM#A"}, "sk": {"S": f"CLIENT#{number}"}},
                    "UpdateExpression": "SET code = :code, #name = :name",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeNames": {"#name": "name"},
                    "ExpressionAttributeValues": {":code": {"S": code}, ":name": {"S": f"N{number}"}},
                }
            }

        def by_code(code: str) -> list[str]:
            answer = table.query(
                IndexName="by_code", KeyConditionExpression=Key("pk").eq("FIRM#A") & Key("code").eq(code)
            )
            return sorted(item["sk"] for item in answer["Items"])

        assert by_code("C0") == ["CLIENT#0"]  # the bench's index map is built before the writes
        client.transact_write_items(TransactItems=[update(0, "X0"), update(1, "X1")])
        try:
            client.transact_write_items(
                TransactItems=[update(2, "X2"), update(3, "C0"), update(9, "X9")]  # CLIENT#9 does not exist
            )
        except client.exceptions.TransactionCanceledException as error:
            outcomes.append([reason.get("Code") for reason in error.response["CancellationReasons"]])
        outcomes.append(
            sorted((item["sk"], item["code"], item.get("name")) for item in table.scan()["Items"])
        )
        outcomes.append([by_code(code) for code in ("C0", "C2", "C3", "X0", "X1", "X2")])

        # A table keyed by its hash key alone (moto keeps its items one level shallower).
        client.create_table(
            TableName="h",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        )
        client.put_item(TableName="h", Item={"id": {"S": "a"}, "v": {"N": "0"}})
        bump = {"UpdateExpression": "SET v = :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}
        try:
            client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": "h",
                            "Key": {"id": {"S": key}},
                            "ConditionExpression": "attribute_exists(id)",
                            **bump,
                        }
                    }
                    for key in ("a", "missing")
                ]
            )
        except client.exceptions.TransactionCanceledException as error:
            outcomes.append([reason.get("Code") for reason in error.response["CancellationReasons"]])
        outcomes.append(
            sorted((item["id"]["S"], item["v"]["N"]) for item in client.scan(TableName="h")["Items"])
        )
    return outcomes


def test_bench_moto_transactions_answer_and_roll_back_as_moto_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's transactions (moto_process: the items they name are copied, not their tables)
    answer, write and roll back as moto's own, index maps included."""
    moto_outcomes = _transaction_outcomes(None)
    assert _transaction_outcomes(monkeypatch) == moto_outcomes
    reasons, items, index, hash_only_reasons, hash_only_items = moto_outcomes
    assert hash_only_reasons == ["None", "ConditionalCheckFailed"]
    assert hash_only_items == [("a", "0")]  # rolled back
    assert reasons == ["None", "None", "ConditionalCheckFailed"]
    assert ("CLIENT#2", "C2", None) in items  # rolled back
    assert ("CLIENT#0", "X0", "N0") in items  # kept
    assert index == [[], ["CLIENT#2"], ["CLIENT#3"], ["CLIENT#0"], ["CLIENT#1"], []]


def test_bench_moto_index_lookups_hold_under_concurrent_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Index lookups on 4 threads while 3 threads write (updates moving a code, puts replacing an
    item, deletes and puts back), as moto server's threads do: no lookup fails or misses an item no
    write touched; the partition is read once, each write re-places only its item; afterwards every
    answer is moto's own."""
    places = 0
    place = _ValueIndex.place

    def counted(index: _ValueIndex, range_key: Any, item: Any) -> None:
        nonlocal places
        places += 1
        place(index, range_key, item)

    monkeypatch.setattr(_ValueIndex, "place", counted)
    _install_fast_reads(monkeypatch)
    size, codes = 120, [f"C{n}" for n in range(7)] + ["C9"]
    with mock_aws():
        table = _table_with_code_index()
        for number in range(size):
            table.put_item(Item={"pk": "FIRM#A", "sk": f"CLIENT#{number:03d}", "code": f"C{number % 7}"})
        moving = [f"CLIENT#{number:03d}" for number in range(0, size, 3)]
        stable: dict[str, set[str]] = {code: set() for code in codes}
        for number in range(size):
            if number % 3:
                stable[f"C{number % 7}"].add(f"CLIENT#{number:03d}")

        # One botocore client for every thread (clients are thread-safe; boto3's resources, whose
        # condition builder counts placeholders per request, are not).
        client = boto3.client("dynamodb", region_name="eu-west-1")

        def by_code(code: str) -> list[str]:
            answer = client.query(
                TableName="t",
                IndexName="by_code",
                KeyConditionExpression="pk = :pk AND code = :code",
                ExpressionAttributeValues={":pk": {"S": "FIRM#A"}, ":code": {"S": code}},
            )
            return sorted(item["sk"]["S"] for item in answer["Items"])

        writes = 0
        writes_lock = threading.Lock()
        problems: list[str] = []
        writing = threading.Barrier(3 + 4)
        done = threading.Event()

        def writer(seed: int) -> None:
            nonlocal writes
            choose = random.Random(seed)
            writing.wait()
            for step in range(24):
                sk, code = choose.choice(moving), choose.choice(codes)
                key = {"pk": {"S": "FIRM#A"}, "sk": {"S": sk}}
                try:
                    if step % 3 == 0:
                        client.update_item(
                            TableName="t",
                            Key=key,
                            UpdateExpression="SET code = :code",
                            ExpressionAttributeValues={":code": {"S": code}},
                        )
                    elif step % 3 == 1:
                        client.put_item(TableName="t", Item={**key, "code": {"S": code}})
                    else:
                        client.delete_item(TableName="t", Key=key)
                        client.put_item(TableName="t", Item={**key, "code": {"S": code}})
                except Exception as error:  # any failure is the finding
                    problems.append(f"writing {sk}: {error!r}")
                    return
                with writes_lock:
                    writes += 2 if step % 3 == 2 else 1

        def reader(seed: int) -> None:
            choose = random.Random(seed)
            writing.wait()
            while not done.is_set():
                code = choose.choice(codes)
                try:
                    found = set(by_code(code))
                except Exception as error:  # any failure is the finding
                    problems.append(f"{code}: {error!r}")
                    return
                # (An item updated in place while moto copies the answer may come back with its new
                # code: moto's own answer does too, it compares and copies at different moments.)
                if missing := stable[code] - found:
                    problems.append(f"{code}: missing {sorted(missing)}")

        writers = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
        readers = [threading.Thread(target=reader, args=(seed,)) for seed in range(10, 14)]
        for thread in writers + readers:
            thread.start()
        for thread in writers:
            thread.join()
        done.set()
        for thread in readers:
            thread.join()
        answers = [by_code(code) for code in codes]
        monkeypatch.setattr(Table, "query", _moto_query)
        moto_answers = [by_code(code) for code in codes]

    assert problems == []
    assert answers == moto_answers
    assert sum(len(answer) for answer in answers) == size
    # Built once from the partition, then each write re-places its item (twice for an update that
    # finds the item deleted: moto puts a new one, then updates it); a map rebuilt after a write
    # would place the whole partition again for each lookup.
    assert places <= size + 2 * writes
