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
import zlib
from typing import Any

from moto.core.responses import ActionContext
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


def install_fast_reads() -> None:
    DynamoResult.execute_result = _fast_execute_result  # type: ignore[method-assign,assignment]


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
