"""The writes the demo, the bench and the tests count on one table (local.write_counts)."""

from __future__ import annotations

from typing import Any

from local.write_counts import items_written, tables_of

BATCH: dict[str, Any] = {
    "RequestItems": {
        "active": [{"PutRequest": {"Item": {}}}] * 3,
        "sync-log": [{"PutRequest": {"Item": {}}}] * 5,
    }
}
TRANSACTION: dict[str, Any] = {
    "TransactItems": [
        {"Update": {"TableName": "active"}},
        {"Update": {"TableName": "active"}},
        {"ConditionCheck": {"TableName": "config"}},
    ]
}


def test_a_batch_counts_only_its_items_for_the_table() -> None:
    assert items_written("active", "BatchWriteItem", BATCH) == 3
    assert tables_of("BatchWriteItem", BATCH) == {"active", "sync-log"}


def test_a_transaction_counts_its_writes_and_a_condition_check_writes_nothing() -> None:
    assert items_written("active", "TransactWriteItems", TRANSACTION) == 2
    assert items_written("config", "TransactWriteItems", TRANSACTION) == 0
    assert tables_of("TransactWriteItems", TRANSACTION) == {"active"}


def test_a_single_item_write_counts_one_and_a_read_none() -> None:
    assert items_written("active", "UpdateItem", {"TableName": "active"}) == 1
    assert items_written("active", "UpdateItem", {"TableName": "config"}) == 0
    assert items_written("active", "Query", {"TableName": "active"}) == 0
    assert tables_of("Query", {"TableName": "active"}) == {"active"}
