"""Markdown tables of a results file, for bench/README.md: ``python -m bench.report [results.json]``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import FAILING_RUNS, ONE_VCPU_MB
from bench.run import FAILING_LABELS, RUN_LABELS, RUNS, import_split
from local.stack import load_template


def worker_memory_mb() -> int:
    props = load_template()["Resources"]["SyncWorkerFunction"]["Properties"]
    return int(props["MemorySize"])


def tables(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"Run of {results['date']} on `{machine['platform']}`, {machine['cpu_count']} CPUs, Python "
        f"{machine['python']}; load average at start {machine['load_average_at_start']}.",
        "",
        "| clients | run | wall s | worker CPU s | moto CPU s | records/s | XPM calls | token refreshes "
        "| Active writes | Active items read | Active requests | peak RSS MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for size, figures in results["sizes"].items():
        for name in RUNS:
            run = figures["runs"][name]
            lines.append(
                f"| {int(size):,} | {RUN_LABELS[name]} | {run['seconds']:.1f} | {run['cpu_seconds']:.1f} "
                f"| {run['moto_cpu_seconds']:.1f} | {run['records_per_second']:.0f} | {run['sim_xpm_calls']} "
                f"| {run['token_refreshes']} | {run['active_writes']:,} | {run['active_items_read']:,} "
                f"| {_requests(run)} | {run['peak_rss_mb']:.0f} |"
            )
        base = figures["baseline"]
        lines.append(
            f"| {int(size):,} | baseline: download {base['bytes'] / 1e6:.1f} MB "
            f"({base['download_seconds']:.1f} s) + batch-write ({base['write_seconds']:.1f} s) "
            f"| {base['seconds']:.1f} | {base['cpu_seconds']:.1f} "
            f"| {base['moto_cpu_seconds']:.1f} | | 1 | | {base['items']:,} | | | {base['peak_rss_mb']:.0f} |"
        )
        lines.append(
            f"| {int(size):,} | **full sync / baseline** | **{figures['ratio']:.2f}x** | | | | | | | | | |"
        )
    lines += ["", incremental_table(results), "", day_table(results)]
    if results.get("failing"):
        lines += ["", failing_table(results["failing"])]
    imports = results.get("imports", [])  # none when the invocation ran other parts only (--only)
    if imports:
        lines += [
            "",
            "| handler module | import ms (median) | runs ms | the project's own modules (ms) "
            "| heaviest imports (ms) |",
            "|---|---:|---|---:|---|",
        ]
    for item in imports:
        heaviest = ", ".join(f"{h['module']} {h['ms']:.0f}" for h in item["heaviest"][:4])
        # Results of runs before the project's share was traced have no figure for it.
        project = f"{item['project_ms']:.0f}" if "project_ms" in item else ""
        runs = item["runs_ms"]
        lines.append(f"| `{item['module']}` | {item['ms']:.0f} | {runs} | {project} | {heaviest} |")
    floor = results.get("import_floor")
    if floor:
        lines.append(f"| for scale: `import boto3` alone | {floor['ms']:.0f} | {floor['runs_ms']} | | |")
    stack = results.get("stack_floor")
    if stack:
        heaviest = ", ".join(f"{h['module']} {h['ms']:.0f}" for h in stack["heaviest"][:4])
        lines.append(
            f"| the stack's floor (`bench/harness.py` `STACK_FLOOR_SOURCE`) | {stack['ms']:.0f} "
            f"| {stack['runs_ms']} | | {heaviest} |"
        )
    libraries = results.get("worker_libraries")
    if libraries:
        lines += ["", import_split(libraries)]
    dispatch = results.get("dispatch")
    if dispatch:
        lines += [
            "",
            f"Dispatcher: {dispatch['queued']:,} firms queued in {dispatch['seconds']:.1f} s "
            f"({dispatch['messages_per_second']:.0f} messages/s, {dispatch['messages_on_queue']:,} on the "
            f"queue afterwards; the dispatcher's own CPU {dispatch.get('cpu_seconds', 0):.1f} s, moto's "
            f"{dispatch.get('moto_cpu_seconds', 0):.1f} s); "
            f"its Lambda timeout is {dispatch['timeout_seconds']} s.",
        ]
    lines += ["", "| target | figure | limit | |", "|---|---|---|---|"]
    for target in results.get("targets", []):
        verdict = "PASS" if target["passed"] else "**FAIL**"
        lines.append(f"| {target['name']} | {target['figure']} | {target['limit']} | {verdict} |")
    return "\n".join(lines)


def _seconds(by_operation: dict[str, float]) -> str:
    return ", ".join(f"{op} {seconds:.1f}" for op, seconds in sorted(by_operation.items()))


def _requests(run: dict[str, Any]) -> str:
    """A run's Active requests by operation, less the ``items written`` tally kept alongside them."""
    return ", ".join(f"{n} {op}" for op, n in sorted(run["active_requests"].items()) if op != "items written")


def _size_table(results: dict[str, Any], header: str, row: Callable[[int, dict[str, Any]], str]) -> str:
    """``header`` (title and alignment lines), then ``row(size, figures)`` for each firm size."""
    return "\n".join([header, *(row(int(size), figures) for size, figures in results["sizes"].items())])


_INCREMENTAL_HEADER = (
    "| clients | changed | Active items read | users + offices | items per changed record | Active "
    "requests | request seconds (summed over threads) | wall s | rerun wall s | vs rerun |\n"
    "|---:|---:|---:|---:|---:|---|---|---:|---:|---:|"
)
_DAY_HEADER = (
    "| clients | hourly runs | changed an hour | clients read an hour (min-max) | hourly bytes (mean) "
    "| hourly runs' bytes | daily full read bytes | **per firm-day** | XPM calls |\n"
    "|---:|---:|---:|---|---:|---:|---:|---:|---:|"
)


def incremental_table(results: dict[str, Any]) -> str:
    """What the 1%-changed run read from Active, and its time against the no-change rerun."""
    return _size_table(results, _INCREMENTAL_HEADER, _incremental_row)


def day_table(results: dict[str, Any]) -> str:
    """Bytes downloaded from XPM per firm-day: the hourly runs and the daily full read."""
    return _size_table(results, _DAY_HEADER, _day_row)


def _incremental_row(size: int, figures: dict[str, Any]) -> str:
    run, rerun = figures["runs"]["incremental"], figures["runs"]["rerun"]
    fixed = figures["users"] + figures["offices"]
    return (
        f"| {size:,} | {figures['changed']:,} | {run['active_items_read']:,} "
        f"| {figures['users']} + {figures['offices']} "
        f"| {(run['active_items_read'] - fixed) / figures['changed']:.2f} | {_requests(run)} "
        f"| {_seconds(run.get('active_request_seconds', {}))} | {run['seconds']:.2f} "
        f"| {rerun['seconds']:.2f} | {run['seconds'] / rerun['seconds']:.1f}x |"
    )


def _day_row(size: int, figures: dict[str, Any]) -> str:
    day = figures["day"]
    runs = day["runs"]
    read = [run["clients_read"] for run in runs]
    return (
        f"| {size:,} | {day['hours']} | {day['changed_per_hour']} | {min(read)}-{max(read)} "
        f"| {day['hourly_bytes'] / len(runs) / 1e3:,.1f} KB | {day['hourly_bytes'] / 1e6:,.2f} MB "
        f"| {day['full_read_bytes'] / 1e6:,.1f} MB | **{day['bytes'] / 1e6:,.1f} MB** "
        f"| {day['xpm_calls']} |"
    )


def failing_table(failing: dict[str, Any]) -> str:
    """The firm with failing clients: each run's outcome, writes and item sizes."""
    lines = [
        f"Firm of {failing['clients']:,} clients, {failing['failing']:,} of them with no partner in XPM and "
        "no Default Partner on the office:",
        "",
        "| run | wall s | status | XPM calls | clients created / failed | Active writes | Active items read "
        "| Active requests | sync-log items written (requests) | sync-log items read | largest item written "
        "(Active / sync log / config), bytes | config item bytes | peak RSS MB |",
        "|---|---:|---|---:|---|---:|---:|---|---|---:|---|---:|---:|",
    ]
    for name in FAILING_RUNS:
        run = failing["runs"][name]
        log = run["sync_log"]
        largest = run["largest_item_bytes"]
        lines.append(
            f"| {FAILING_LABELS[name]} | {run['seconds']:.1f} | {run['status']} | {run['sim_xpm_calls']} "
            f"| {run['counts']['client']['created']:,} / {run['counts']['client']['failed']:,} "
            f"| {run['active_writes']:,} | {run['active_items_read']:,} | {_requests(run)} "
            f"| {log['items_written']:,} ({log['write_requests']:,}) | {log['items_read']:,} "
            f"| {largest['active']:,} / {largest['sync_log']:,} / {largest['config']:,} "
            f"| {run['config_item_bytes']:,} | {run['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


FIRMS_PER_HOUR = 10_000
DEFAULT_RESERVED_CONCURRENCY = int(load_template()["Parameters"]["WorkerReservedConcurrency"]["Default"])


def capacity_tables(results: dict[str, Any], worker_memory_mb: int) -> str:
    """Worker duration per firm and the busy workers it implies for 10,000 firms an hour.

    Lambda gives CPU in proportion to memory (one vCPU at 1,769 MB), so the worker's CPU seconds
    measured on a full core here take ``1769 / memory`` times as long in Lambda."""
    cpu_scale = max(1.0, ONE_VCPU_MB / worker_memory_mb)
    arrivals_per_second = FIRMS_PER_HOUR / 3600
    lines = [
        f"**Worker duration per firm** (this run: wall on moto / worker CPU here / that CPU on Lambda "
        f"at {worker_memory_mb} MB, x{cpu_scale:.2f}; seconds):",
        "",
        "| clients | no-change hour | daily full read | 1% changed | first sync |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size, figures in results["sizes"].items():
        cells = [
            f"{run['seconds']:.1f} / {run['cpu_seconds']:.1f} / {run['cpu_seconds'] * cpu_scale:.1f}"
            for run in (figures["runs"][name] for name in ("rerun", "daily", "incremental", "first"))
        ]
        lines.append(f"| {int(size):,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**Reserved concurrency.** {FIRMS_PER_HOUR:,} firms an hour is λ = {arrivals_per_second:.2f} "
        "firms/s; by Little's law the busy workers are λ x d, with d a no-change hour. The dispatcher "
        "queues them all at once, though, at the top of the hour: with the template's default "
        f"{DEFAULT_RESERVED_CONCURRENCY} workers (its reserved concurrency, which also caps the queue's "
        "event source) the hour's queue drains in N x d / 5, and a Start Sync pressed meanwhile "
        "waits about that long at most:",
        "",
        "| every firm has | d: moto wall / Lambda CPU | workers, moto wall | workers, Lambda CPU only "
        f"| the hour drains in ({DEFAULT_RESERVED_CONCURRENCY} workers, moto wall) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size, figures in results["sizes"].items():
        rerun = figures["runs"]["rerun"]
        lambda_cpu = rerun["cpu_seconds"] * cpu_scale
        drain_minutes = FIRMS_PER_HOUR * rerun["seconds"] / DEFAULT_RESERVED_CONCURRENCY / 60
        lines.append(
            f"| {int(size):,} clients | {rerun['seconds']:.1f} s / {lambda_cpu:.1f} s "
            f"| {arrivals_per_second * rerun['seconds']:.1f} | {arrivals_per_second * lambda_cpu:.1f} "
            f"| {drain_minutes:.0f} min |"
        )
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    print(tables(results))
    print()
    print(capacity_tables(results, worker_memory_mb()))


if __name__ == "__main__":
    main()
