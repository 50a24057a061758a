"""One measured job in a fresh process: ``python -m bench.job '<json>'``.

Each job runs in its own interpreter so that its peak RSS (``ru_maxrss``) is its own: neither the
simulator (in the bench process) nor moto server (another process) is counted. The environment
(SPEC B2 variables, ``AWS_ENDPOINT_URL``) comes from the parent. The result is printed as one line
``BENCH_RESULT {json}``; everything else a job prints (Powertools logs) is ignored by the parent.

Jobs:
- ``sync``: one SQS message for the firm, delivered to ``functions.sync_worker.app.lambda_handler``
  the way Lambda's SQS event source does (``local.lambda_runtime.drain_queue``).
- ``baseline``: download the same client list (httpx stream, no parse) and batch-write the same
  number of items (no mapping) to the same Active table with the sync's own ``BatchWrites``.
- ``dispatch``: one scheduled event into ``functions.sync_dispatch.app.lambda_handler``.
"""

from __future__ import annotations

import cProfile
import json
import os
import resource
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

from xpm_sync.adapters.dynamodb import from_item, item_size

from local.write_counts import WRITE_OPERATIONS, items_read, items_written, tables_of

RESULT_PREFIX = "BENCH_RESULT "


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far: ``VmHWM`` of /proc/self/status.

    Not ``ru_maxrss``: Linux carries it over from the parent across fork and exec, so a job started
    by a bench process holding a 50,000-client practice would report the bench process's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort


class TableCounts:
    """What one job's requests did to each table it watches: requests by operation, items written
    and read (``local.write_counts``), and (``sizes``) the largest item written.

    One hook on the DynamoDB client (it serves every table) sees each request's parameters before
    they are sent and another its parsed answer; lookups run on several threads, hence the lock."""

    def __init__(self, client: Any, tables: dict[str, str], *, sizes: bool = False) -> None:
        self.client = client
        self.names = tables  # role (active, sync_log, config) -> table name
        self.roles = {name: role for role, name in tables.items()}
        self.requests: dict[str, Counter[str]] = {role: Counter() for role in tables}
        self.written: Counter[str] = Counter()
        self.read: Counter[str] = Counter()
        # Seconds from each request's parameters to its parsed answer, summed by operation (requests
        # made on several threads at once overlap: the sum can pass the wall time).
        self.seconds: dict[str, Counter[str]] = {role: Counter() for role in tables}
        self.sizes = sizes
        self.largest_put: dict[str, int] = dict.fromkeys(tables, 0)
        self.updated_keys: dict[str, dict[str, dict[str, Any]]] = {role: {} for role in tables}
        self.counting = False  # on while the handler runs
        self._lock = threading.Lock()
        client.meta.events.register("provide-client-params.dynamodb.*", self._request)
        client.meta.events.register("after-call.dynamodb.*", self._answer)

    def _request(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if not self.counting:
            return
        operation = model.name
        watched = [(self.roles[t], t) for t in tables_of(operation, params) if t in self.roles]
        context["bench_tables"] = (watched, params, time.monotonic())
        with self._lock:
            for role, table in watched:
                self.requests[role][operation] += 1
                self.written[role] += items_written(table, operation, params)
                if self.sizes:
                    self._note_sizes(role, table, operation, params)

    def _note_sizes(self, role: str, table: str, operation: str, params: dict[str, Any]) -> None:
        puts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        if operation == "PutItem":
            puts.append(params["Item"])
        elif operation == "UpdateItem":
            updates.append(params["Key"])
        elif operation == "BatchWriteItem":
            puts += [r["PutRequest"]["Item"] for r in params["RequestItems"][table] if "PutRequest" in r]
        elif operation == "TransactWriteItems":
            for action in params["TransactItems"]:
                if "Put" in action and action["Put"]["TableName"] == table:
                    puts.append(action["Put"]["Item"])
                if "Update" in action and action["Update"]["TableName"] == table:
                    updates.append(action["Update"]["Key"])
        for item in puts:
            self.largest_put[role] = max(self.largest_put[role], item_size(from_item(item)))
        for key in updates:
            self.updated_keys[role][json.dumps(key, sort_keys=True)] = key

    def _answer(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        if "bench_tables" not in context:
            return
        watched, params, started = context["bench_tables"]
        elapsed = time.monotonic() - started
        with self._lock:
            for role, table in watched:
                self.read[role] += items_read(table, model.name, params, parsed)
                self.seconds[role][model.name] += elapsed

    def largest_updated(self, role: str) -> int:
        """The size of the largest item this job updated in the table, read back after the run
        (an UpdateItem's parameters do not say how large the item is)."""
        keys = list(self.updated_keys[role].values())
        largest = 0
        for start in range(0, len(keys), 100):
            pending: dict[str, Any] = {self.names[role]: {"Keys": keys[start : start + 100]}}
            while pending:
                answer = self.client.batch_get_item(RequestItems=pending)
                for item in answer.get("Responses", {}).get(self.names[role], []):
                    largest = max(largest, item_size(from_item(item)))
                pending = answer.get("UnprocessedKeys") or {}
        return largest

    def figures(self, role: str) -> dict[str, Any]:
        return {
            "requests": dict(self.requests[role]),
            "items_written": self.written[role],
            "items_read": self.read[role],
            "request_seconds": {op: round(seconds, 3) for op, seconds in self.seconds[role].items()},
            "write_requests": sum(n for op, n in self.requests[role].items() if op in WRITE_OPERATIONS),
        }


class XpmBytes:
    """Bytes of XPM answers this process downloads (bodies as they arrive, before any decoding),
    by endpoint: every response of the HTTP transport to a ``/practicemanager/`` path."""

    def __init__(self) -> None:
        import httpx

        self.by_endpoint: Counter[str] = Counter()
        original = httpx.HTTPTransport.handle_request
        counts = self.by_endpoint

        class Counting(httpx.SyncByteStream):
            def __init__(self, stream: Any, endpoint: str) -> None:
                self._stream = stream
                self._endpoint = endpoint

            def __iter__(self) -> Iterator[bytes]:
                for chunk in self._stream:
                    counts[self._endpoint] += len(chunk)
                    yield chunk

            def close(self) -> None:
                self._stream.close()

        def handle_request(transport: Any, request: Any) -> Any:
            response = original(transport, request)
            path = request.url.path
            if path.startswith("/practicemanager/"):
                api, _, rest = path.split("/3.1/", 1)[-1].partition("/")
                response.stream = Counting(response.stream, f"{api}/{rest.split('/', 1)[0]}")
            return response

        httpx.HTTPTransport.handle_request = handle_request  # type: ignore[method-assign,assignment]

    @property
    def total(self) -> int:
        return sum(self.by_endpoint.values())


def sync_job(args: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    xpm_bytes = XpmBytes()
    from xpm_sync.adapters import aws
    from xpm_sync.adapters.config_table import ConfigRepository
    from xpm_sync.adapters.sync_log import RunLog
    from xpm_sync.adapters.tls import shared_tls_context

    from functions.sync_worker.app import lambda_handler
    from local.lambda_runtime import drain_queue

    imported = time.monotonic() - started
    # A warm container: the AWS clients the handler uses already exist (xpm_sync.adapters.aws caches
    # them per process, as a Lambda container keeps them between invocations), and so does the TLS
    # context every XPM client of the process shares (read from the CA bundle once, 30-70 ms).
    # Making them is a cold-start cost, reported on its own.
    setup_started = time.monotonic()
    for name in ("CONFIG_TABLE", "ACTIVE_TABLE", "SYNC_LOG_TABLE"):
        aws.table(os.environ[name])
    aws.client("secretsmanager")
    sqs = aws.client("sqs")
    shared_tls_context()
    client_setup = time.monotonic() - setup_started
    rss_after_import = peak_rss_mb()
    active = aws.table(os.environ["ACTIVE_TABLE"])
    tables = {
        "active": os.environ["ACTIVE_TABLE"],
        "sync_log": os.environ["SYNC_LOG_TABLE"],
        "config": os.environ["CONFIG_TABLE"],
    }
    counts = TableCounts(active.client, tables, sizes=bool(args.get("sizes")))
    queue_url = os.environ["SYNC_QUEUE_URL"]
    body = json.dumps({"firm_id": args["firm_id"], "trigger": args.get("trigger", "schedule")})
    # An explicit deduplication id: content-based deduplication would drop a second identical
    # message within 5 minutes, and the benchmark sends the same body run after run.
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        MessageGroupId=args["firm_id"],
        MessageDeduplicationId=uuid.uuid4().hex,
    )
    handler_seconds = handler_cpu = 0.0
    profiler = cProfile.Profile() if args.get("profile") else None

    def timed(event: dict[str, Any], context: Any) -> Any:
        nonlocal handler_seconds, handler_cpu
        counts.counting = True
        begin, cpu_begin = time.monotonic(), cpu_seconds()
        if profiler is not None:
            profiler.enable()
        try:
            return lambda_handler(event, context)
        finally:
            if profiler is not None:
                profiler.disable()
            handler_seconds += time.monotonic() - begin
            handler_cpu += cpu_seconds() - cpu_begin
            counts.counting = False

    deliveries = drain_queue(sqs, queue_url, timed, max_batches=5)
    peak = peak_rss_mb()
    if profiler is not None:
        profiler.dump_stats(args["profile"])
    # Read after the clock stopped, and not counted: the run, and the sizes the run left.
    config_table = aws.table(tables["config"])
    config = ConfigRepository(config_table).get(args["firm_id"])
    run_id = config.last_run_id if config is not None else None
    run = RunLog(aws.table(tables["sync_log"])).get_run(args["firm_id"], run_id) if run_id else None
    if run is None:
        raise RuntimeError(f"no run recorded for firm {args['firm_id']}")
    config_item = config_table.get_item(Key={"firm_id": args["firm_id"]}, ConsistentRead=True)["Item"]
    active_figures = counts.figures("active")
    result: dict[str, Any] = {
        "seconds": handler_seconds,
        "cpu_seconds": handler_cpu,
        "import_seconds": imported,
        "client_setup_seconds": client_setup,
        "messages": sum(len(d.bodies) for d in deliveries),
        "failed_messages": sum(len(d.failed) for d in deliveries),
        "run_id": run.run_id,
        "status": run.status,
        "full_read": run.full_read,
        "counts": run.counts,
        "xpm_calls": run.xpm_calls,
        "entry_count": run.entry_count,
        "active_requests": active_figures["requests"],
        # Items written (a BatchWriteItem counts its items), and the requests that carried them.
        "active_writes": active_figures["items_written"],
        "active_write_requests": active_figures["write_requests"],
        # Items DynamoDB returned from the Active table (index queries included), not requests.
        "active_items_read": active_figures["items_read"],
        "active_request_seconds": active_figures["request_seconds"],
        "sync_log": counts.figures("sync_log"),
        "config": counts.figures("config"),
        "config_item_bytes": item_size(config_item),
        "xpm_bytes": xpm_bytes.total,
        "xpm_bytes_by_endpoint": dict(xpm_bytes.by_endpoint),
        "peak_rss_mb": peak,
        "rss_after_import_mb": rss_after_import,
    }
    if counts.sizes:
        result["largest_item_bytes"] = {
            role: max(counts.largest_put[role], counts.largest_updated(role)) for role in tables
        }
    return result


def baseline_job(args: dict[str, Any]) -> dict[str, Any]:
    import httpx
    from xpm_sync.adapters import aws
    from xpm_sync.adapters.active_table import BatchWrites

    # Clients made before the clock starts, as for the worker (a warm container).
    table = aws.table(os.environ["ACTIVE_TABLE"])
    http = httpx.Client(timeout=120.0)
    started, cpu_started = time.monotonic(), cpu_seconds()
    size = 0
    headers = {"Authorization": f"Bearer {args['access_token']}", "xero-tenant-id": args["tenant_id"]}
    with http, http.stream("GET", args["url"], params={"detailed": "true"}, headers=headers) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
    downloaded = time.monotonic() - started

    template: dict[str, Any] = dict(args["item"])
    pk = f"BENCH#{uuid.uuid4().hex}"
    # The sync's own writer (as many requests in flight), so the ratio measures what the sync
    # adds, not how it writes.
    writes = BatchWrites(table)
    write_started = time.monotonic()
    for number in range(int(args["items"])):
        writes.put({**template, "pk": pk, "sk": f"CLIENT#{number:08d}"})
    writes.flush()
    written = time.monotonic() - write_started
    return {
        "seconds": time.monotonic() - started,
        "cpu_seconds": cpu_seconds() - cpu_started,
        "download_seconds": downloaded,
        "write_seconds": written,
        "bytes": size,
        "items": int(args["items"]),
        "peak_rss_mb": peak_rss_mb(),
    }


def dispatch_job(args: dict[str, Any]) -> dict[str, Any]:
    from functions.sync_dispatch.app import lambda_handler
    from local.lambda_runtime import LocalContext, scheduled_event

    context = LocalContext("SyncDispatchFunction", timeout_seconds=float(args.get("timeout", 30)))
    started, cpu_started = time.monotonic(), cpu_seconds()
    answer = lambda_handler(scheduled_event(), context)
    return {
        "seconds": time.monotonic() - started,
        "cpu_seconds": cpu_seconds() - cpu_started,
        "queued": int(answer["queued"]),
        "peak_rss_mb": peak_rss_mb(),
    }


JOBS = {"sync": sync_job, "baseline": baseline_job, "dispatch": dispatch_job}


def main() -> None:
    args = json.loads(sys.argv[1])
    result = JOBS[args["job"]](args)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
