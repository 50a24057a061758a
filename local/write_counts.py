"""What a DynamoDB request writes to one table, from the parameters botocore is about to send, and
what its answer reads from one table.

The demo, the bench and the tests all count the writes a run makes to the Active table (a rerun with
nothing changed must write nothing), and count them the same way, from here. The bench also counts
the items a run reads (an incremental run must read the records its XPM answer concerns, not the
firm): items DynamoDB returned, not requests.
"""

from __future__ import annotations

from typing import Any

WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
READ_OPERATIONS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem"})
_TRANSACTION_WRITES = ("Put", "Update", "Delete")  # a ConditionCheck alone writes nothing


def tables_of(operation: str, params: dict[str, Any]) -> set[str]:
    """The tables a request reads or writes (for a transaction, those it writes)."""
    if operation in ("BatchWriteItem", "BatchGetItem"):
        return set(params.get("RequestItems", {}))
    if operation == "TransactWriteItems":
        return {
            action["TableName"]
            for item in params.get("TransactItems", [])
            for kind, action in item.items()
            if kind in _TRANSACTION_WRITES
        }
    table = params.get("TableName")
    return {table} if isinstance(table, str) else set()


def items_written(table: str, operation: str, params: dict[str, Any]) -> int:
    """The items a request writes to ``table``: each of a batch or a transaction, one for a
    single-item write, none for a read or a request to another table."""
    if operation == "BatchWriteItem":
        return len(params.get("RequestItems", {}).get(table, []))
    if operation == "TransactWriteItems":
        return sum(
            1
            for item in params.get("TransactItems", [])
            for kind, action in item.items()
            if kind in _TRANSACTION_WRITES and action.get("TableName") == table
        )
    return 1 if operation in WRITE_OPERATIONS and params.get("TableName") == table else 0


def items_read(table: str, operation: str, params: dict[str, Any], answer: dict[str, Any]) -> int:
    """The items DynamoDB returned from ``table`` in one answer: a Query's or Scan's ``Items``
    (index queries included; after any filter, as DynamoDB returns them), a GetItem's ``Item``, a
    BatchGetItem's ``Responses`` for the table. Not the requests, nor the items a query scanned."""
    if operation == "BatchGetItem":
        return len(answer.get("Responses", {}).get(table, []))
    if operation not in READ_OPERATIONS or params.get("TableName") != table:
        return 0
    if operation == "GetItem":
        return 1 if answer.get("Item") else 0
    return len(answer.get("Items", []))
