"""DynamoDB tables with Python values in and out (xpm_sync.adapters.dynamodb): items come back as boto3's
Table resource gives them, batches go 25 to a request, and unprocessed items are sent again."""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from xpm_sync.adapters import aws
from xpm_sync.adapters.dynamodb import (
    BATCH_SIZE,
    BatchWriter,
    Table,
    UnprocessedItems,
    is_condition_failure,
    to_attribute,
)

from tests.fixtures.aws import count_requests

REGION = "ap-southeast-2"

EVERY_KIND = {
    "pk": "FIRM#f1",
    "sk": "CLIENT#c1",
    "legal_name": "Acme Pty Ltd",
    "xpm_archived": False,
    "expires_at": 1_790_000_000,
    "share": Decimal("0.25"),
    "nothing": None,
    "residential_address": {"line1": "1 Main St", "suburb": "Perth", "post_code": "6000"},
    "modules": ["tax", "audit"],
    "retry_client_uuids": {"uuid-1", "uuid-2"},
    "counts": {"client": {"created": 3, "failed": 0}},
    "scores": {1, 2},
}


@pytest.fixture
def table(pk_sk_table: Table) -> Table:
    return pk_sk_table


def as_boto3_gives_it(value: Any) -> Any:
    """The item as boto3's Table resource would return it: numbers as Decimal."""
    if isinstance(value, dict):
        return {k: as_boto3_gives_it(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_boto3_gives_it(v) for v in value]
    if isinstance(value, set):
        return {as_boto3_gives_it(v) for v in value}
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


def test_every_kind_of_value_comes_back_as_boto3s_table_resource_gives_it(table: Table) -> None:
    table.put_item(Item=EVERY_KIND)

    ours = table.get_item(Key={"pk": "FIRM#f1", "sk": "CLIENT#c1"})["Item"]
    theirs = (
        boto3.resource("dynamodb", region_name=REGION)
        .Table("items")
        .get_item(Key={"pk": "FIRM#f1", "sk": "CLIENT#c1"})["Item"]
    )

    assert ours == theirs == as_boto3_gives_it(EVERY_KIND)
    assert isinstance(ours["expires_at"], Decimal)


def test_an_item_written_by_boto3_reads_back_the_same(table: Table) -> None:
    boto3.resource("dynamodb", region_name=REGION).Table("items").put_item(Item=EVERY_KIND)

    assert table.query(
        KeyConditionExpression="pk = :pk AND begins_with(sk, :clients)",
        ExpressionAttributeValues={":pk": "FIRM#f1", ":clients": "CLIENT#"},
    )["Items"] == [as_boto3_gives_it(EVERY_KIND)]


def test_a_float_is_refused_without_showing_the_value() -> None:
    # boto3 refuses floats too: DynamoDB would store them rounded.
    with pytest.raises(TypeError, match="float") as refused:
        to_attribute({"rate": 0.1234567})
    assert "0.1234567" not in str(refused.value)


def test_a_number_dynamodb_cannot_hold_exactly_is_refused() -> None:
    with pytest.raises((decimal.Inexact, decimal.Rounded)):
        to_attribute(10**40 + 1)  # 41 digits: DynamoDB keeps 38


@pytest.mark.parametrize(
    "value",
    [set(), Decimal("NaN"), Decimal("Infinity"), {1: "a name that is not a string"}],
    ids=["empty set", "NaN", "Infinity", "number as a name"],
)
def test_what_dynamodb_cannot_store_is_refused_before_it_sees_it(value: Any) -> None:
    with pytest.raises(TypeError):
        to_attribute(value)


def test_query_pages_carry_on_from_the_last_evaluated_key(table: Table) -> None:
    for number in range(5):
        table.put_item(Item={"pk": "FIRM#f1", "sk": f"USER#{number}", "n": number})
    found: list[dict[str, Any]] = []
    parameters: dict[str, Any] = {
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": "FIRM#f1"},
        "Limit": 2,
    }
    while True:
        page = table.query(**parameters)
        found += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        parameters["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    assert [item["n"] for item in found] == [0, 1, 2, 3, 4]


def test_a_false_condition_is_recognised_and_nothing_is_written(table: Table) -> None:
    table.put_item(Item={"pk": "p", "sk": "s", "v": "first"})

    with pytest.raises(ClientError) as refused:
        table.put_item(
            Item={"pk": "p", "sk": "s", "v": "second"}, ConditionExpression="attribute_not_exists(pk)"
        )

    assert is_condition_failure(refused.value)
    assert table.get_item(Key={"pk": "p", "sk": "s"})["Item"]["v"] == "first"


def test_updates_return_old_values_as_python_values(table: Table) -> None:
    table.put_item(Item={"pk": "p", "sk": "s", "runs": 1})

    answer = table.update_item(
        Key={"pk": "p", "sk": "s"},
        UpdateExpression="SET runs = runs + :one",
        ExpressionAttributeValues={":one": 1},
        ReturnValues="UPDATED_OLD",
    )

    assert answer["Attributes"] == {"runs": Decimal(1)}


def test_the_batch_writer_sends_25_to_a_request_and_the_rest_when_the_block_ends(table: Table) -> None:
    requests = count_requests(table)

    with table.batch_writer() as batch:
        for number in range(60):
            batch.put_item(Item={"pk": "FIRM#f1", "sk": f"CLIENT#{number:03d}"})
        assert requests["BatchWriteItem"] == 2  # 50 sent, 10 waiting

    assert requests["BatchWriteItem"] == 3
    assert requests["items"] == 60
    assert len(table.scan()["Items"]) == 60


def test_the_batch_writer_still_sends_what_it_holds_when_the_block_fails(table: Table) -> None:
    def hand_over_then_fail() -> None:
        with table.batch_writer() as batch:
            batch.put_item(Item={"pk": "p", "sk": "handed-over"})
            raise RuntimeError("the caller failed after handing the item over")

    with pytest.raises(RuntimeError):
        hand_over_then_fail()

    assert table.get_item(Key={"pk": "p", "sk": "handed-over"})["Item"]["sk"] == "handed-over"


class ThrottlingClient:
    """A DynamoDB client that writes at most ``per_send`` items of each BatchWriteItem, after
    ``stalls`` sends that write nothing; the rest comes back unprocessed."""

    def __init__(self, *, per_send: int = BATCH_SIZE, stalls: int = 0) -> None:
        self.per_send = per_send
        self.stalls = stalls
        self.written: list[dict[str, Any]] = []
        self.sends = 0

    def batch_write_item(self, *, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        requests = RequestItems["items"]
        self.sends += 1
        if self.stalls > 0:
            self.stalls -= 1
            return {"UnprocessedItems": {"items": requests}}
        self.written += [request["PutRequest"]["Item"] for request in requests[: self.per_send]]
        return {"UnprocessedItems": {"items": requests[self.per_send :]} if requests[self.per_send :] else {}}


def typed(count: int) -> list[dict[str, Any]]:
    return [{"pk": {"S": "p"}, "sk": {"S": str(number)}} for number in range(count)]


def test_unprocessed_items_are_sent_again_after_a_backoff_until_all_are_written() -> None:
    client, waits = ThrottlingClient(per_send=10, stalls=2), list[float]()
    table = Table(client, "items", sleep=waits.append)

    with BatchWriter(table) as batch:
        for number in range(25):
            batch.put_item(Item={"pk": "p", "sk": str(number)})

    assert client.written == typed(25)  # each once, none lost
    assert client.sends == 5  # two that wrote nothing, then 10 + 10 + 5
    assert len(waits) == 4
    assert all(0 <= wait <= 2.0 for wait in waits)


def test_a_throttled_partition_that_still_takes_some_items_is_never_given_up_on() -> None:
    # One item a send: far more sends than the stall limit, but each one makes progress.
    client = ThrottlingClient(per_send=1)
    Table(client, "items", sleep=lambda _: None).write_batch(typed(25))

    assert client.written == typed(25)
    assert client.sends == 25


def test_items_that_no_send_gets_through_fail_the_write_instead_of_looping() -> None:
    client, waits = ThrottlingClient(stalls=1_000), list[float]()
    table = Table(client, "items", sleep=waits.append)

    with pytest.raises(UnprocessedItems, match="3 items"):
        table.write_batch(typed(3))

    assert client.sends == 8
    assert client.written == []
    assert sum(waits) < 10


class UnhurriedReader:
    """A DynamoDB client whose BatchGetItem answers at most ``per_send`` of the keys asked for,
    after ``stalls`` answers that read nothing; the rest comes back unprocessed. Keys whose ``sk``
    is in ``missing`` name no item."""

    def __init__(
        self, *, per_send: int = 100, stalls: int = 0, missing: frozenset[str] = frozenset()
    ) -> None:
        self.per_send = per_send
        self.stalls = stalls
        self.missing = missing
        self.asked: list[int] = []

    def batch_get_item(self, *, RequestItems: dict[str, dict[str, Any]]) -> dict[str, Any]:
        request = RequestItems["items"]
        assert request["ConsistentRead"] is True
        keys = request["Keys"]
        self.asked.append(len(keys))
        if self.stalls > 0:
            self.stalls -= 1
            return {"Responses": {"items": []}, "UnprocessedKeys": {"items": {"Keys": keys}}}
        answered, rest = keys[: self.per_send], keys[self.per_send :]
        found = [
            dict(key, name={"S": f"item {key['sk']['S']}"})
            for key in answered
            if key["sk"]["S"] not in self.missing
        ]
        return {"Responses": {"items": found}, "UnprocessedKeys": {"items": {"Keys": rest}} if rest else {}}


def test_items_are_read_by_key_100_to_a_request_and_unprocessed_keys_are_asked_for_again() -> None:
    client, waits = UnhurriedReader(per_send=60, stalls=1, missing=frozenset({"7"})), list[float]()
    table = Table(client, "items", sleep=waits.append)

    found = table.get_items([{"pk": "p", "sk": str(number)} for number in range(250)])

    assert sorted(int(item["sk"]) for item in found) == [n for n in range(250) if n != 7]  # each once
    assert found[0] == {"pk": "p", "sk": found[0]["sk"], "name": f"item {found[0]['sk']}"}
    assert client.asked[:4] == [100, 100, 40, 100]  # the stalled send, then 60 + 40 of the first 100
    assert max(client.asked) <= 100
    assert len(waits) == 3  # after the stall and after each partly answered send (the last 50 fit)
    assert table.get_items([]) == []


def test_keys_that_no_send_gets_through_fail_the_read_instead_of_looping() -> None:
    client = UnhurriedReader(stalls=1_000)

    with pytest.raises(UnprocessedItems, match="2 keys"):
        Table(client, "items", sleep=lambda _: None).get_items(
            [{"pk": "p", "sk": "1"}, {"pk": "p", "sk": "2"}]
        )

    assert len(client.asked) == 8


def test_every_table_of_one_environment_shares_one_dynamodb_client(table: Table) -> None:
    # One client to make at a cold start instead of one per table.
    aws.clear_clients()
    try:
        assert aws.table("items").client is aws.table("other").client
        assert aws.table("items") is aws.table("items")
    finally:
        aws.clear_clients()
