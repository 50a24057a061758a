"""DynamoDB tables with plain Python values in and out, over a botocore client.

The repositories call a table as they would call boto3's Table resource (``get_item``,
``put_item``, ``update_item``, ``delete_item``, ``query``, ``scan``, ``batch_writer``), with the
same value types: strings, ``int`` and ``Decimal`` in, ``Decimal`` out, booleans, ``None``, maps,
lists and sets (binary values come back as ``bytes``, not boto3's ``Binary``; the project stores
none). This module does the conversion to and from DynamoDB's typed attribute values
itself, so that no handler imports boto3: boto3 (with the s3transfer it imports) is about 45 ms of
every cold start on the bench machine, and a Table resource loads boto3's resource model on its
first call. botocore does the calling, signing and retrying, as it does under boto3.

Numbers follow boto3's rules: a ``float``, Infinity and NaN are refused (a float would be stored
rounded), and a number DynamoDB cannot hold exactly (over 38 digits) raises ``decimal.Inexact`` or
``decimal.Rounded``. An empty set or a name that is not a string is refused before DynamoDB sees it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from types import TracebackType
from typing import Any

from botocore.exceptions import ClientError

# DynamoDB's number type, as boto3 defines it: 38 digits, and anything inexact is an error.
_NUMBERS = Context(Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow])
BATCH_SIZE = 25  # DynamoDB's most per BatchWriteItem
GET_BATCH_SIZE = 100  # DynamoDB's most keys per BatchGetItem
_STALLED_SENDS = 8  # sends in a row that write nothing before a batch gives up (up to ~9 s of backoff)

# Request parameters that hold items, keys or values, and answer fields that do.
_ITEM_PARAMETERS = ("Key", "Item", "ExclusiveStartKey")
_ANSWER_ITEMS = ("Item", "Attributes", "LastEvaluatedKey")


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_condition_failure(error: ClientError) -> bool:
    """The write's ConditionExpression was false: DynamoDB's answer, not a fault."""
    return error_code(error) == "ConditionalCheckFailedException"


def to_attribute(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | Decimal):
        return {"N": _number(value)}
    if isinstance(value, bytes | bytearray):
        return {"B": bytes(value)}
    if isinstance(value, Mapping):
        return {"M": to_item(value)}
    if isinstance(value, list | tuple):
        return {"L": [to_attribute(member) for member in value]}
    if isinstance(value, set | frozenset) and value:
        return _set_attribute(value)
    # The type alone: the value may be something no log should show.
    raise TypeError(f"DynamoDB cannot store a value of type {type(value).__name__}")


def _set_attribute(members: set[Any] | frozenset[Any]) -> dict[str, Any]:
    if all(isinstance(member, str) for member in members):
        return {"SS": list(members)}
    if all(isinstance(member, int | Decimal) and not isinstance(member, bool) for member in members):
        return {"NS": [_number(member) for member in members]}
    if all(isinstance(member, bytes | bytearray) for member in members):
        return {"BS": [bytes(member) for member in members]}
    raise TypeError("DynamoDB sets hold strings, numbers or binary values, one kind per set")


def _number(value: int | Decimal) -> str:
    if isinstance(value, Decimal) and not value.is_finite():
        raise TypeError("DynamoDB cannot store Infinity or NaN")
    return str(_NUMBERS.create_decimal(value))


def from_attribute(attribute: Mapping[str, Any]) -> Any:
    """A DynamoDB attribute value as a Python value (numbers as ``Decimal``, as boto3 gives them)."""
    ((kind, value),) = attribute.items()
    if kind == "S":
        return value
    if kind == "N":
        return _NUMBERS.create_decimal(value)
    if kind == "BOOL":
        return value
    if kind == "M":
        return from_item(value)
    if kind == "L":
        return [from_attribute(member) for member in value]
    if kind == "NULL":
        return None
    if kind == "SS":
        return set(value)
    if kind == "NS":
        return {_NUMBERS.create_decimal(member) for member in value}
    if kind == "B":
        return bytes(value)
    if kind == "BS":
        return {bytes(member) for member in value}
    raise TypeError(f"unknown DynamoDB attribute type {kind}")


def to_item(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    if not all(isinstance(name, str) for name in values):
        raise TypeError("DynamoDB attribute names are strings")
    return {name: to_attribute(value) for name, value in values.items()}


def from_item(item: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {name: from_attribute(value) for name, value in item.items()}


def _request(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A request's items, keys and expression values in DynamoDB's typed form."""
    request = dict(parameters)
    for name in _ITEM_PARAMETERS:
        if name in request:
            request[name] = to_item(request[name])
    if "ExpressionAttributeValues" in request:
        request["ExpressionAttributeValues"] = to_item(request["ExpressionAttributeValues"])
    return request


def _answer(answer: dict[str, Any]) -> dict[str, Any]:
    for name in _ANSWER_ITEMS:
        if name in answer:
            answer[name] = from_item(answer[name])
    if "Items" in answer:
        answer["Items"] = [from_item(item) for item in answer["Items"]]
    return answer


# DynamoDB's limit on one item, names and values together.
MAX_ITEM_BYTES = 400 * 1024


def item_size(values: Mapping[str, Any]) -> int:
    """The bytes DynamoDB counts for an item of plain values (names and values, as documented:
    strings and binaries by length, numbers by about one byte for two digits, maps and lists with a
    few bytes each of overhead). Close enough to refuse an item before DynamoDB does."""
    return sum(len(str(name).encode()) + _value_size(value) for name, value in values.items())


def _value_size(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, int | Decimal):
        return len(str(value)) // 2 + 2
    if isinstance(value, Mapping):
        return 3 + sum(len(str(name).encode()) + _value_size(item) + 1 for name, item in value.items())
    if isinstance(value, set | frozenset | list | tuple):
        return 3 + sum(_value_size(item) + 1 for item in value)
    return len(str(value).encode())


class UnprocessedItems(Exception):
    """DynamoDB kept leaving some items (or keys) of a batch unprocessed (throttling outlasted the
    backoff)."""


class Table:
    """One DynamoDB table, called with plain Python values (module docstring).

    The keyword arguments are DynamoDB's own (``Key``, ``UpdateExpression``, ``ReturnValues``,
    ...); the table's name is added. Errors are botocore's ``ClientError``.
    """

    def __init__(self, client: Any, name: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.name = name
        self._sleep = sleep

    def _call(self, operation: Callable[..., Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
        return _answer(operation(TableName=self.name, **_request(parameters)))

    def get_item(self, **parameters: Any) -> dict[str, Any]:
        return self._call(self.client.get_item, parameters)

    def put_item(self, **parameters: Any) -> dict[str, Any]:
        return self._call(self.client.put_item, parameters)

    def update_item(self, **parameters: Any) -> dict[str, Any]:
        return self._call(self.client.update_item, parameters)

    def update_item_if(self, **parameters: Any) -> bool:
        """``update_item`` with a ``ConditionExpression``: False, with nothing written, when the
        condition does not hold."""
        try:
            self.update_item(**parameters)
        except ClientError as error:
            if not is_condition_failure(error):
                raise
            return False
        return True

    def delete_item(self, **parameters: Any) -> dict[str, Any]:
        return self._call(self.client.delete_item, parameters)

    def query(self, **parameters: Any) -> dict[str, Any]:
        return self._call(self.client.query, parameters)

    def scan(self, **parameters: Any) -> dict[str, Any]:
        return self._call(self.client.scan, parameters)

    def query_items(self, **parameters: Any) -> Iterator[dict[str, Any]]:
        """Every item a query finds, page after page (the one pager of the project)."""
        return self._every_page(self.query, parameters)

    def scan_items(self, **parameters: Any) -> Iterator[dict[str, Any]]:
        """Every item a scan finds, page after page."""
        return self._every_page(self.scan, parameters)

    @staticmethod
    def _every_page(
        operation: Callable[..., dict[str, Any]], parameters: Mapping[str, Any]
    ) -> Iterator[dict[str, Any]]:
        request = dict(parameters)
        while True:
            page = operation(**request)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get_items(self, keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The items under these keys that exist, read consistently, 100 keys to a BatchGetItem, in
        no particular order; keys DynamoDB leaves unprocessed are asked for again as
        :meth:`write_requests` sends items again."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), GET_BATCH_SIZE):
            pending = [to_item(key) for key in keys[start : start + GET_BATCH_SIZE]]
            stalled = 0
            while pending:
                answer = self.client.batch_get_item(
                    RequestItems={self.name: {"Keys": pending, "ConsistentRead": True}}
                )
                items = answer.get("Responses", {}).get(self.name, [])
                found.extend(from_item(item) for item in items)
                unprocessed = answer.get("UnprocessedKeys", {}).get(self.name, {}).get("Keys", [])
                stalled = stalled + 1 if not items and len(unprocessed) == len(pending) else 0
                pending = list(unprocessed)
                if pending:
                    self._back_off(stalled, f"{len(pending)} keys of {self.name} were still unprocessed")
        return found

    def _back_off(self, stalled: int, what: str) -> None:
        # Jittered, growing waits between sends, as AWS advises for unprocessed batches.
        if stalled >= _STALLED_SENDS:
            raise UnprocessedItems(f"{what} after retries")
        self._sleep(random.uniform(0, min(2.0, 0.05 * 2 ** (stalled + 1))))  # noqa: S311 - jitter

    def transact_updates(self, updates: Sequence[Mapping[str, Any]]) -> None:
        """UpdateItems on this table in one transaction: all are written or none. Each update
        takes ``update_item``'s parameters; the transaction's own errors are ``ClientError``
        (``TransactionCanceledException`` when a condition fails)."""
        self.client.transact_write_items(
            TransactItems=[{"Update": {"TableName": self.name, **_request(update)}} for update in updates]
        )

    def batch_writer(self) -> BatchWriter:
        return BatchWriter(self)

    def write_batch(self, items: list[dict[str, dict[str, Any]]]) -> None:
        """PutItems of at most 25 typed items in one BatchWriteItem (:meth:`write_requests`)."""
        self.write_requests([{"PutRequest": {"Item": item}} for item in items])

    def write_requests(self, requests: list[dict[str, Any]]) -> None:
        """At most 25 typed Put or Delete requests in one BatchWriteItem, and again for those
        DynamoDB leaves unprocessed (throttling), backing off with jitter between sends as AWS advises.

        It keeps going while each send gets some items through: every record of a firm shares one
        partition key, so a large first sync can meet the partition's write limit and still
        finish. It gives up only when ``_STALLED_SENDS`` sends in a row write nothing."""
        pending, stalled = requests, 0
        while pending:
            answer = self.client.batch_write_item(RequestItems={self.name: pending})
            unprocessed = answer.get("UnprocessedItems", {}).get(self.name, [])
            stalled = stalled + 1 if len(unprocessed) == len(pending) else 0
            pending = list(unprocessed)
            if pending:
                self._back_off(stalled, f"{len(pending)} items to {self.name} were still unprocessed")


class BatchWriter:
    """``put_item(Item=...)`` sent 25 to a BatchWriteItem; what is left is sent when the ``with``
    block ends (also when it ends with an error, so that nothing already handed over is lost)."""

    def __init__(self, table: Table) -> None:
        self._table = table
        self._buffer: list[dict[str, Any]] = []

    def put_item(self, *, Item: Mapping[str, Any]) -> None:
        self._add({"PutRequest": {"Item": to_item(Item)}})

    def delete_item(self, *, Key: Mapping[str, Any]) -> None:
        self._add({"DeleteRequest": {"Key": to_item(Key)}})

    def _add(self, request: dict[str, Any]) -> None:
        self._buffer.append(request)
        if len(self._buffer) >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[:BATCH_SIZE], self._buffer[BATCH_SIZE:]
            self._table.write_requests(batch)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.flush()


def update_expression(
    values: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``update_item``'s expression parameters for plain attribute values (the one builder).

    Each of ``values`` is SET, or REMOVEd when it is ``None`` or an empty set (DynamoDB holds no
    empty set, and an absent attribute is the stored form of "nothing"). Each of ``defaults`` not
    among ``values`` is set only where the item does not have it yet (``if_not_exists``).
    Names and values are always aliased, so reserved words (``status``, ``name``) need no care.
    An empty answer means there is nothing to write.
    """
    defaults = {name: value for name, value in (defaults or {}).items() if name not in values}
    names: dict[str, str] = {}
    expression_values: dict[str, Any] = {}
    assignments: list[str] = []
    removals: list[str] = []
    for index, (name, value) in enumerate([*values.items(), *defaults.items()]):
        alias = f"#a{index}"
        names[alias] = name
        if name in defaults and name not in values:
            expression_values[f":v{index}"] = value
            assignments.append(f"{alias} = if_not_exists({alias}, :v{index})")
        elif value is None or value == set():
            removals.append(alias)
        else:
            expression_values[f":v{index}"] = value
            assignments.append(f"{alias} = :v{index}")
    parts = []
    if assignments:
        parts.append("SET " + ", ".join(assignments))
    if removals:
        parts.append("REMOVE " + ", ".join(removals))
    if not parts:
        return {}
    expression: dict[str, Any] = {"UpdateExpression": " ".join(parts), "ExpressionAttributeNames": names}
    if expression_values:
        expression["ExpressionAttributeValues"] = expression_values
    return expression
