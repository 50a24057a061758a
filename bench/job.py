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
import time
import uuid
from collections import Counter
from typing import Any

from local.write_counts import WRITE_OPERATIONS, items_written, tables_of

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


def _count_requests(table: Any, counter: Counter[str]) -> None:
    """Count every request made to this table (its client serves the other tables too), by
    operation name, and the items written to it."""

    def hook(params: dict[str, Any], model: Any, **_: Any) -> None:
        if table.name not in tables_of(model.name, params):
            return
        counter[model.name] += 1
        counter["items written"] += items_written(table.name, model.name, params)

    table.client.meta.events.register("provide-client-params.dynamodb.*", hook)


def sync_job(args: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    from xpm_sync.adapters import aws
    from xpm_sync.adapters.sync_log import RunLog

    from functions.sync_worker.app import lambda_handler
    from local.lambda_runtime import drain_queue

    imported = time.monotonic() - started
    # A warm container: the AWS clients the handler uses already exist (xpm_sync.adapters.aws caches
    # them per process, as a Lambda container keeps them between invocations). Making them is a
    # cold-start cost, reported on its own.
    setup_started = time.monotonic()
    for name in ("CONFIG_TABLE", "ACTIVE_TABLE", "SYNC_LOG_TABLE"):
        aws.table(os.environ[name])
    aws.client("secretsmanager")
    sqs = aws.client("sqs")
    client_setup = time.monotonic() - setup_started
    rss_after_import = peak_rss_mb()
    requests: Counter[str] = Counter()
    _count_requests(aws.table(os.environ["ACTIVE_TABLE"]), requests)
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

    deliveries = drain_queue(sqs, queue_url, timed, max_batches=5)
    if profiler is not None:
        profiler.dump_stats(args["profile"])
    run = RunLog(aws.table(os.environ["SYNC_LOG_TABLE"])).list_runs(args["firm_id"], limit=1)[0][0]
    return {
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
        "active_requests": dict(requests),
        # Items written (a BatchWriteItem counts its items), and the requests that carried them.
        "active_writes": requests["items written"],
        "active_write_requests": sum(n for op, n in requests.items() if op in WRITE_OPERATIONS),
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_import_mb": rss_after_import,
    }


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
