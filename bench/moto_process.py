"""moto server in a process of its own, so its CPU and memory are never counted as the worker's.

Prints ``MOTO_URL <url>`` once it listens, then serves until its stdin closes (the parent exits
or closes the pipe), so it can never outlive the benchmark. On stdin it also takes the bench's
``settle`` before each measured job: it collects its garbage and freezes what it holds
(``gc.freeze``), so a job's requests are not charged for the garbage collector walking every
item moto stores (about half a second per full collection at 50,000 clients; DynamoDB's
requests cost the same whatever a table holds).

One bench-only change to moto: moto 5.2's generic, shape-driven response serializer spends
milliseconds per item on DynamoDB read answers (tens of minutes for a 50,000-item partition), which
would make the benchmark measure moto rather than the sync. Read answers (Query, Scan, GetItem,
BatchGetItem) are already DynamoDB JSON after moto's own ``dynamo_to_dict``, so they are written
with ``json.dumps`` instead: the same document on the wire, with the CRC32 header botocore checks.

Reads by key read only what they can return, as DynamoDB's do: moto answers every Query by
sorting every item of the table and comparing each with the key condition, so a read of one
firm's office took seconds beside a 50,000-client partition, and each index lookup of an
incremental run (one client by XPM UUID or code) half a second. A Query on a table is given only
its partition's items (with ``begins_with`` on the sort key, only those with the prefix; after a
page's start key, only those beyond it), and an equality on a global index keyed by the table's
partition key only the items holding that value, from a map of the partition by that value: built
at the partition's first such query, then kept up to date by each write (the item written is
re-placed, under a lock: the server answers on many threads), so no lookup reads the whole
partition again. moto still applies the key condition, filter, order, limit and projection itself,
so the answers are moto's own (``test_bench_moto_reads_by_key_answer_as_moto_does``, and under
concurrent writes ``test_bench_moto_index_lookups_hold_under_concurrent_writes``).

Transactions copy only the items they name, not each table they name, to roll back (moto's copy
took seconds per transaction beside 50,000 items); and a request's service is looked up once per
host, not by listing moto's package directory each time.

And two to moto's SQS, which is quadratic in the queue length where SQS is not (1,000 firms took
two minutes to queue, 10,000 would take hours): every SendMessage reads ``Queue.attributes`` four
times, and each read recounts the queue's visible, delayed and in-flight messages, so attributes
are computed when asked for instead (the answers are the same); and a FIFO message's
deduplication id is looked up in an index, not by walking every stored message. The index keeps
SQS's rule (an id seen in the last 5 minutes is dropped, even if that message was deleted since);
moto only compares with the messages still stored. Queues with a Lambda event source mapping keep
moto's own path; the benchmark has none.
"""

from __future__ import annotations

import base64
import bisect
import copy
import gc
import inspect
import json
import sys
import threading
import weakref
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from moto.core.responses import ActionContext
from moto.core.utils import camelcase_to_underscores
from moto.dynamodb import models as moto_dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoResult
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.sqs.models import DEDUPLICATION_TIME_IN_SECONDS, Message, Queue

from bench.moto_commands import SETTLE_COMMAND, SETTLED_ANSWER
from local.stack import MotoServer

FAST_OPERATIONS = frozenset({"Query", "Scan", "GetItem", "BatchGetItem"})
_moto_execute_result = DynamoResult.execute_result


def _fast_execute_result(self: DynamoResult, context: ActionContext) -> Any:
    if context.operation_model.name not in FAST_OPERATIONS:
        return _moto_execute_result(self, context)
    try:
        body = json.dumps(self.result, separators=(",", ":"), default=_binary)
    except TypeError:
        return _moto_execute_result(self, context)
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "x-amz-crc32": str(zlib.crc32(body.encode("utf-8")) & 0xFFFFFFFF),
    }
    return 200, headers, body


def _binary(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(type(value).__name__)


_moto_query = Table.query
_moto_all_items = Table.all_items
_moto_put_item = Table.put_item
_moto_delete_item = Table.delete_item
_moto_update_item = DynamoDBBackend.update_item
_partition = threading.local()
_QUERY_PARAMETERS = inspect.signature(_moto_query)


def _query_by_key(self: Table, *args: Any, **kwargs: Any) -> Any:
    # moto's Query starts from all_items(), which sorts every item of the table on every page: a
    # 50,000-item partition then costs minutes per read, and an index query (one client looked up
    # by XPM UUID or code) a fraction of a second each. all_items() is given only the items the
    # query can find: for a Query on the table itself, its partition; for an equality on a global
    # index keyed by the table's partition key and one attribute, the items of that partition
    # holding that value (``_index_candidates``). The query still filters, sorts and pages them
    # itself, so its answer is moto's own.
    call = _QUERY_PARAMETERS.bind(self, *args, **kwargs)
    hash_key = call.arguments["hash_key"]
    index_name = call.arguments.get("index_name")
    candidates: list[Any] | None = None
    if hash_key is not None and self.range_key_attr:
        if not index_name:
            candidates = _table_candidates(
                self,
                hash_key,
                call.arguments["range_comparison"],
                call.arguments["range_objs"],
                call.arguments["exclusive_start_key"],
                forward=call.arguments["scan_index_forward"] is not False,
            )
        else:
            candidates = _index_candidates(
                self, index_name, hash_key, call.arguments["range_comparison"], call.arguments["range_objs"]
            )
    if candidates is None:
        return _moto_query(self, *args, **kwargs)
    _partition.scope = (self, candidates)
    try:
        return _moto_query(self, *args, **kwargs)
    finally:
        _partition.scope = None


def _all_items(self: Table) -> Any:
    scope = getattr(_partition, "scope", None)
    if scope is not None and scope[0] is self:
        return scope[1]
    return _moto_all_items(self)


def _table_candidates(
    table: Table,
    hash_key: Any,
    comparison: str | None,
    values: list[Any],
    exclusive_start_key: dict[str, Any] | None,
    *,
    forward: bool,
) -> list[Any]:
    """The items of ``hash_key``'s partition a Query on the table can return, in sort-key order:
    with ``begins_with`` on a string sort key only those with the prefix, and after a page's
    ``ExclusiveStartKey`` only those beyond it (as DynamoDB reads a key range, where moto would
    compare every item of the partition on every page)."""
    items = [item for _, item in _snapshot(table.items.get(hash_key, {}))]
    range_attr = table.range_key_attr
    if not all(item.range_key is not None and item.range_key.type == "S" for item in items):
        return items
    if (comparison or "").upper() == "BEGINS_WITH" and len(values) == 1 and values[0].type == "S":
        prefix = values[0].value
        items = [item for item in items if item.range_key.value.startswith(prefix)]
    items.sort(key=lambda item: item.range_key.value)
    start = (exclusive_start_key or {}).get(range_attr or "", {}).get("S")
    if isinstance(start, str):
        if forward:
            items = items[bisect.bisect_right([item.range_key.value for item in items], start) :]
        else:
            items = items[: bisect.bisect_left([item.range_key.value for item in items], start)]
    return items


def _index_candidates(
    table: Table, index_name: str, hash_key: Any, comparison: str | None, values: list[Any]
) -> list[Any] | None:
    """The items of ``hash_key``'s partition whose index attribute equals ``values[0]``, from the
    partition's map by that attribute (``_ValueIndex``, built at the first such query and kept up
    to date by every write since); None when the query is not such an equality (moto's own path)."""
    index = next((i for i in table.global_indexes or [] if i.name == index_name), None)
    if index is None or comparison not in ("=", "EQ") or len(values) != 1:
        return None
    hashes = [key["AttributeName"] for key in index.schema if key["KeyType"] == "HASH"]
    ranges = [key["AttributeName"] for key in index.schema if key["KeyType"] == "RANGE"]
    if hashes != [table.hash_key_attr] or len(ranges) != 1 or not _indexable(values[0]):
        return None
    with _index_lock:
        partitions = _value_indexes.setdefault(table, {})
        by_index = partitions.setdefault(hash_key, {})
        value_index = by_index.get(index_name)
        if value_index is None:
            # Built once, from what the partition holds now; a write that has changed the table
            # and not yet re-placed its item (it waits for this lock) re-places it after.
            value_index = by_index[index_name] = _ValueIndex(ranges[0])
            for range_key, item in _snapshot(table.items.get(hash_key, {})):
                value_index.place(range_key, item)
        return value_index.holding(values[0])


def _snapshot(partition: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """The partition's (range key, item) pairs as they are now; a write on another thread may
    change it meanwhile (moto's writes take no lock), and copying it is then simply done again."""
    while True:
        try:
            return list(partition.items())
        except RuntimeError:  # changed size during the copy
            continue


def _indexable(value: Any) -> bool:
    return getattr(value, "type", None) in ("S", "N", "B")


class _ValueIndex:
    """One global index over one partition: its items by the value of the index's range attribute.

    Every write to the partition re-places the item it wrote (``_written``): its old value is
    forgotten and whatever the table holds under that key now is placed under its value. Placing
    reads the table's current item, not what the write meant to write, so writes that end in any
    order leave the map as the table is. The map is only a list of candidates: moto still compares
    each candidate with the key condition, so a candidate whose value an in-place update is
    changing at that moment is answered as moto would."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute
        self._by_value: dict[Any, dict[Any, Any]] = {}  # value -> {range key: item}
        self._value_of: dict[Any, Any] = {}  # range key -> the value it is placed under

    def place(self, range_key: Any, item: Any | None) -> None:
        old = self._value_of.pop(range_key, None)
        if old is not None:
            holders = self._by_value[old]
            del holders[range_key]
            if not holders:
                del self._by_value[old]
        value = item.attrs.get(self.attribute) if item is not None else None
        if value is not None and _indexable(value):
            self._by_value.setdefault(value, {})[range_key] = item
            self._value_of[range_key] = value

    def holding(self, value: Any) -> list[Any]:
        return list(self._by_value.get(value, {}).values())


# Guards the maps, which writes and lookups on moto server's threads both change; moto's own
# operations run outside it. Keyed weakly by table: a table moto replaces (a transaction rolled
# back, a table deleted and created again) starts with no map and builds its own.
_index_lock = threading.Lock()
_value_indexes: weakref.WeakKeyDictionary[Table, dict[Any, dict[str, _ValueIndex]]] = (
    weakref.WeakKeyDictionary()
)


def _written(table: Table, hash_key: Any, range_key: Any) -> None:
    """A write to the item under these keys has ended (or failed): re-place it in the partition's
    index maps, if any query has built them."""
    if range_key is None:
        return
    with _index_lock:
        by_index = _value_indexes.get(table, {}).get(hash_key)
        if not by_index:
            return
        item = _stored(table, hash_key, range_key)
        for value_index in by_index.values():
            value_index.place(range_key, item)


def _keys(table: Table, attributes: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """The key of the item these attributes (DynamoDB JSON) name, as moto keys its items; None if
    they name none (moto has refused the request then, and changed nothing)."""
    try:
        hash_key = DynamoType(attributes[table.hash_key_attr])
        range_attribute = table.range_key_attr
        return hash_key, DynamoType(attributes[range_attribute]) if range_attribute else None
    except (KeyError, TypeError, AttributeError, IndexError):
        return None


def _put_item(self: Table, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return _moto_put_item(self, item_attrs, *args, **kwargs)
    finally:
        if (keys := _keys(self, item_attrs)) is not None:
            _written(self, *keys)


def _delete_item(self: Table, hash_key: Any, range_key: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return _moto_delete_item(self, hash_key, range_key, *args, **kwargs)
    finally:
        _written(self, hash_key, range_key)


def _update_item(
    self: DynamoDBBackend, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any
) -> Any:
    # moto updates the stored item in place (Table.put_item only when the item is new).
    try:
        return _moto_update_item(self, table_name, key, *args, **kwargs)
    finally:
        table = self.tables.get(table_name)
        if table is not None and (keys := _keys(table, key)) is not None:
            _written(table, *keys)


_moto_transact_write_items = DynamoDBBackend.transact_write_items
_in_transaction = threading.local()


class _TablesCopiedByReference:
    """``copy`` as moto's DynamoDB models see it: within a transaction (``_transact_write_items``)
    a table's deep copy is the table itself; anything else is copied as before."""

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value: Any, *args: Any) -> Any:
        if isinstance(value, Table) and getattr(_in_transaction, "active", False):
            return value
        return copy.deepcopy(value, *args)


def _stored(table: Table, hash_key: Any, range_key: Any) -> Any:
    if range_key is None:
        return table.items.get(hash_key)
    return table.items.get(hash_key, {}).get(range_key)


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    # moto deep-copies each table a transaction names, to put it back if the transaction fails:
    # seconds per transaction beside a 50,000-item partition. Only the items the transaction names
    # can change, so those are copied instead, and put back (and re-placed in the index maps) if
    # it fails; moto still runs the transaction itself.
    saved: list[tuple[Table, Any, Any, Any]] = []
    for entry in transact_items:
        _, operation = next(iter(entry.items()))
        table = self.tables.get(operation.get("TableName"))
        keys = _keys(table, operation.get("Key") or operation.get("Item") or {}) if table else None
        if table is not None and keys is not None:
            saved.append((table, *keys, copy.deepcopy(_stored(table, *keys))))
    _in_transaction.active = True
    try:
        _moto_transact_write_items(self, transact_items)
    except Exception:
        for table, hash_key, range_key, item in reversed(saved):
            if range_key is None:  # a table keyed by its hash key alone: items[hash] is the item
                if item is None:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = item
            elif item is None:
                table.items.get(hash_key, {}).pop(range_key, None)
            else:
                table.items[hash_key][range_key] = item
            _written(table, hash_key, range_key)
        raise
    finally:
        _in_transaction.active = False


class _QueueAttributes(Mapping[str, Any]):
    """``Queue.attributes`` as moto computes it, one attribute at a time, when asked for."""

    def __init__(self, queue: Queue, names: list[str]) -> None:
        self._queue = queue
        self._names = names

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        if name == "RedrivePolicy" and self._queue.redrive_policy:
            return json.dumps(self._queue.redrive_policy)
        value = getattr(self._queue, camelcase_to_underscores(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _lazy_queue_attributes(self: Queue) -> Mapping[str, Any]:
    names = list(Queue.BASE_ATTRIBUTES)
    if self.fifo_queue:
        names += Queue.FIFO_ATTRIBUTES
    if self.kms_master_key_id:  # type: ignore[attr-defined]
        names += Queue.KMS_ATTRIBUTES
    return _QueueAttributes(self, names)


_moto_add_message = Queue.add_message


def _add_message_deduplicated_by_index(self: Queue, message: Message) -> None:
    if self.lambda_event_source_mappings or not self.fifo_queue or not message.deduplication_id:
        _moto_add_message(self, message)
        return
    first_sent: dict[str, int] = self.__dict__.setdefault("_bench_deduplication_index", {})
    sent = first_sent.get(message.deduplication_id)
    if sent is not None and (message.sent_timestamp - sent) / 1000 < DEDUPLICATION_TIME_IN_SECONDS:  # type: ignore[operator]
        return
    first_sent[message.deduplication_id] = message.sent_timestamp  # type: ignore[assignment]
    with self._messages_lock:
        self._messages.append(message)
        self._messages_lock.notify_all()


_moto_backend_for_host = DomainDispatcherApplication.get_backend_for_host


def _backend_for_host_once(self: DomainDispatcherApplication, host: str | None) -> Any:
    # moto lists its package directory (and stats each entry) to route every request; the answer
    # depends on the host alone.
    known: dict[str | None, Any] = self.__dict__.setdefault("_bench_backend_by_host", {})
    if host not in known:
        known[host] = _moto_backend_for_host(self, host)
    return known[host]


def install_fast_paths() -> None:
    DomainDispatcherApplication.get_backend_for_host = _backend_for_host_once  # type: ignore[method-assign]
    DynamoResult.execute_result = _fast_execute_result  # type: ignore[method-assign,assignment]
    Table.query = _query_by_key  # type: ignore[method-assign]
    Table.all_items = _all_items  # type: ignore[method-assign]
    Table.put_item = _put_item  # type: ignore[method-assign]
    Table.delete_item = _delete_item  # type: ignore[method-assign]
    DynamoDBBackend.update_item = _update_item  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    moto_dynamodb_models.copy = _TablesCopiedByReference()  # type: ignore[attr-defined,assignment]
    Queue.attributes = property(_lazy_queue_attributes)  # type: ignore[assignment,method-assign]
    Queue.add_message = _add_message_deduplicated_by_index  # type: ignore[method-assign]


def settle() -> None:
    # moto keeps every item as Python objects (a 50,000-client firm is millions of them), and each
    # full collection of CPython's garbage collector walks them all: about half a second at 50,000
    # clients, landing in whichever request allocates at the time. DynamoDB's requests cost the
    # same whatever a table holds, so before each measured job what moto holds is frozen: out of
    # the collector's walks (objects are still freed when nothing refers to them any more).
    gc.collect()
    gc.freeze()


def serve_commands(commands: TextIO, answers: TextIO) -> None:
    """Carry out the bench's commands (``bench.moto_commands``) until its pipe closes."""
    for line in commands:
        if line.strip() == SETTLE_COMMAND:
            settle()
            print(SETTLED_ANSWER, file=answers, flush=True)


def main() -> None:
    if "--moto-serializer" not in sys.argv:
        install_fast_paths()

    server = MotoServer()
    server.start()
    print(f"MOTO_URL {server.url}", flush=True)
    try:
        serve_commands(sys.stdin, sys.stdout)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
