"""moto server in a process of its own, so its CPU and memory are never counted as the worker's.

Prints ``MOTO_URL <url>`` once it listens, then serves until its stdin closes (the parent exits
or closes the pipe), so it can never outlive the benchmark.

One bench-only change to moto: moto 5.2's generic, shape-driven response serializer spends
milliseconds per item on DynamoDB read answers (tens of minutes for a 50,000-item partition), which
would make the benchmark measure moto rather than the sync. Read answers (Query, Scan, GetItem,
BatchGetItem) are already DynamoDB JSON after moto's own ``dynamo_to_dict``, so they are written
with ``json.dumps`` instead: the same document on the wire, with the CRC32 header botocore checks.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import zlib
from typing import Any

from moto.core.responses import ActionContext
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoResult

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


def install_fast_reads() -> None:
    DynamoResult.execute_result = _fast_execute_result  # type: ignore[method-assign,assignment]
    Table.query = _query_one_partition  # type: ignore[method-assign]
    Table.all_items = _all_items  # type: ignore[method-assign]


def main() -> None:
    if "--moto-serializer" not in sys.argv:
        install_fast_reads()
    server = MotoServer()
    server.start()
    print(f"MOTO_URL {server.url}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
