"""moto server in a process of its own, so its CPU and memory are never counted as the worker's.

Prints ``MOTO_URL <url>`` once it listens, then serves until its stdin closes (the parent exits
or closes the pipe), so it can never outlive the benchmark.

One bench-only change to moto: moto 5.2's generic, shape-driven response serializer spends
milliseconds per item on DynamoDB read answers (tens of minutes for a 50,000-item partition), which
would make the benchmark measure moto rather than the sync. Read answers (Query, Scan, GetItem,
BatchGetItem) are already DynamoDB JSON after moto's own ``dynamo_to_dict``, so they are written
with ``json.dumps`` instead: the same document on the wire, with the CRC32 header botocore checks.

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
import json
import sys
import threading
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from moto.core.responses import ActionContext
from moto.core.utils import camelcase_to_underscores
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoResult
from moto.sqs.models import DEDUPLICATION_TIME_IN_SECONDS, Message, Queue

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
_partition = threading.local()


def _query_one_partition(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
    # moto's Query starts from all_items(), which sorts every item of the table on every page: a
    # 50,000-item partition then costs minutes per read. A Query on the table itself (no index)
    # only ever keeps items of its own partition, so all_items() is given just that partition;
    # the query still filters, sorts and pages them itself.
    if kwargs.get("index_name") or hash_key is None or not self.range_key_attr:
        return _moto_query(self, hash_key, *args, **kwargs)
    _partition.scope = (self, hash_key)
    try:
        return _moto_query(self, hash_key, *args, **kwargs)
    finally:
        _partition.scope = None


def _all_items(self: Table) -> Any:
    scope = getattr(_partition, "scope", None)
    if scope is not None and scope[0] is self:
        return list(self.items.get(scope[1], {}).values())
    return _moto_all_items(self)


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


def install_fast_paths() -> None:
    DynamoResult.execute_result = _fast_execute_result  # type: ignore[method-assign,assignment]
    Table.query = _query_one_partition  # type: ignore[method-assign]
    Table.all_items = _all_items  # type: ignore[method-assign]
    Queue.attributes = property(_lazy_queue_attributes)  # type: ignore[assignment,method-assign]
    Queue.add_message = _add_message_deduplicated_by_index  # type: ignore[method-assign]


def main() -> None:
    if "--moto-serializer" not in sys.argv:
        install_fast_paths()
    server = MotoServer()
    server.start()
    print(f"MOTO_URL {server.url}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
