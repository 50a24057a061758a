"""``make bench``: the real sync path at 1,000, 10,000 and 50,000 clients, against a baseline.

For each size: a full first sync, a rerun with nothing changed, the daily full read with nothing
changed, a day of 24 hourly runs with 0.1% of the clients changed each hour (the XPM bytes of a
firm-day), and an incremental run after 1% of the clients were renamed in XPM. Then a baseline that
only downloads the same XML and batch-writes as many items. Besides: a 50,000-client firm with 20%
of its clients failing (its first sync, the next hourly run, and the run after the cause is fixed
in Active), the cold-start import time of every handler, and the dispatcher queueing 10,000 firms.
Figures go to ``bench/results.json``.

python -m bench.run [--sizes 1000,10000,50000] [--quick] [--only sizes,...] [--out PATH] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    FAILING_RUNS,
    HANDLER_FUNCTIONS,
    STAFF,
    Bench,
    add_firm,
    bench_stack,
    build_layer,
    change_clients,
    count_records,
    force_full_read,
    measure_baseline,
    measure_dispatch,
    measure_failing_firm,
    measure_firm_day,
    measure_import,
    measure_library_imports,
    measure_stack_floor,
    measure_sync,
    timed,
)

HERE = Path(__file__).resolve().parent
DEFAULT_SIZES = (1000, 10_000, 50_000)
RUNS = ("first", "rerun", "daily", "incremental")
# What one invocation can run (--only): the import times, the dispatcher, the sizes, the failing firm.
PARTS = ("imports", "dispatch", "sizes", "failing")
RUN_LABELS = {
    "first": "first sync (full read)",
    "rerun": "rerun, nothing changed",
    "daily": "daily full read, nothing changed",
    "incremental": "incremental, 1% renamed",
}
# Targets of the issue.
MAX_BASELINE_RATIO = 1.5
MAX_PEAK_RSS_MB = 512.0
RSS_SIZE = 50_000
MAX_WORKER_IMPORT_MS = 300.0
WORKER_MODULE = "functions.sync_worker.app"
MINIMUM_CALLS = {"staff.api/list": 1, "client.api/list": 1}
# Issue 19: an incremental run reads from Active at most this many items per changed record, plus
# the firm's users and offices; at this size its wall time stays within this much of a no-change run.
MAX_ITEMS_READ_PER_CHANGED = 3
INCREMENTAL_TIME_SIZE = 50_000
MAX_INCREMENTAL_VS_RERUN = 2.0
# A firm-day: hourly runs, each after this share of the clients changed in XPM over the hour.
DAY_HOURS = 24
DAY_SHARE = 0.001
# The failing firm: its size and the share of its clients that fail; item size limits.
FAILING_SIZE = 50_000
FAILING_SHARE = 0.2
MAX_ITEM_BYTES = 64 * 1024
MAX_CONFIG_ITEM_BYTES = 10 * 1024
FAILING_LABELS = {
    "first": "first sync (full read)",
    "retry": "next hourly run, nothing changed in XPM",
    "fixed": "after a Default Partner is set in Active",
}


def _spread(values: list[float]) -> float:
    return max(values) - min(values)


def import_split(libraries: dict[str, Any]) -> str:
    """The worker's import split into its libraries and the project's own modules, in words."""
    packages = ", ".join(libraries["packages"])
    text = (
        f"Split of the worker's import, in CPU time of a fresh interpreter ({len(libraries['runs_cpu_ms'])} "
        f"turns): `import app` {libraries['handler_cpu_ms']:.0f} ms; the {libraries['modules']} modules it "
        f"loads from outside the project, alone and in the same order (from {packages} "
        "and the standard library), "
        f"{libraries['cpu_ms']:.0f} ms; so the project's own modules, with the library work they cause, "
        f"{libraries['project_cpu_ms']:.0f} ms (median of the turns' differences; each side's turns "
        f"spread over {_spread(libraries['handler_runs_cpu_ms']):.0f} and "
        f"{_spread(libraries['runs_cpu_ms']):.0f} ms, so this difference is rough: the import's trace "
        "times the project's modules in one interpreter)."
    )
    if libraries["not_loaded"] or libraries["loaded_besides"]:
        text += (
            f" The libraries module did not load {libraries['not_loaded']} and loaded "
            f"{libraries['loaded_besides']} besides, so the split is approximate."
        )
    return text


@dataclass
class Target:
    name: str
    figure: str
    limit: str
    passed: bool


def at_most(name: str, figure: str, value: float, limit: float, shown: str) -> Target:
    """A target met while ``value`` stays within ``limit``, written ``<= `` and ``shown.format(limit)``."""
    return Target(name, figure, "<= " + shown.format(limit), value <= limit)


def say(text: str = "") -> None:
    print(text, flush=True)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def source() -> dict[str, Any]:
    """The commit measured, and whether tracked files differed from it (others' edits in flight)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=False)
        return done.stdout.rstrip()

    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "changed_files": changed}


def bench_size(
    bench: Bench, size: int, profile_dir: Path | None, *, day_hours: int = DAY_HOURS
) -> dict[str, Any]:
    firm, setup_seconds = timed(add_firm, bench, size)
    say(f"\n== {size:,} clients, {STAFF} staff (setup {setup_seconds:.1f}s) ==")
    say(
        f"{'run':34}{'wall s':>9}{'rec/s':>9}{'XPM calls':>11}{'token':>7}"
        f"{'writes':>8}{'reads':>8}{'peak RSS MB':>13}{'status':>9}"
    )
    runs: dict[str, dict[str, Any]] = {}
    changed = users = offices = 0
    day: list[dict[str, Any]] = []
    for name in RUNS:
        if name == "daily":
            force_full_read(bench, firm)
        if name == "incremental":
            # A day of hourly runs first: its hours are laid in the past, before the 1% change.
            day = measure_firm_day(bench, firm, hours=day_hours, share=DAY_SHARE)
            users = count_records(bench, firm, "USER#")
            offices = count_records(bench, firm, "OFFICE#")
            changed = change_clients(firm)
        profile = str(profile_dir / f"sync-{size}-{name}.prof") if profile_dir else None
        result = measure_sync(bench, firm, profile=profile)
        runs[name] = result
        say(
            f"{RUN_LABELS[name]:34}{result['seconds']:>9.2f}{result['records_per_second']:>9.0f}"
            f"{result['sim_xpm_calls']:>11}{result['token_refreshes']:>7}{result['active_writes']:>8}"
            f"{result['active_items_read']:>8}{result['peak_rss_mb']:>13.0f}{result['status']:>9}"
        )
    baseline = measure_baseline(bench, firm, items=runs["first"]["active_writes"])
    ratio = runs["first"]["seconds"] / baseline["seconds"]
    say(
        f"{'baseline (download + batch write)':34}{baseline['seconds']:>9.2f}"
        f"{'':>9}{1:>11}{'':>7}{baseline['items']:>8}{'':>8}{baseline['peak_rss_mb']:>13.0f}"
    )
    say(
        f"  baseline: download {baseline['bytes'] / 1e6:.1f} MB in {baseline['download_seconds']:.2f}s, "
        f"{baseline['items']:,} items batch-written in {baseline['write_seconds']:.2f}s; "
        f"full sync / baseline = {ratio:.2f}x"
    )
    incremental = runs["incremental"]
    versus_rerun = incremental["seconds"] / runs["rerun"]["seconds"]
    say(
        f"  incremental run: {changed} clients renamed in XPM; {incremental['active_items_read']:,} Active "
        f"items read ({users} users, {offices} offices), {versus_rerun:.1f}x the no-change rerun's wall time"
    )
    firm_day = summarize_day(day, runs["daily"])
    say(
        f"  firm-day: {firm_day['hours']} hourly runs ({firm_day['changed_per_hour']} changed an hour) "
        f"{firm_day['hourly_bytes'] / 1e6:.2f} MB + the daily full read "
        f"{firm_day['full_read_bytes'] / 1e6:.1f} MB "
        f"= {firm_day['bytes'] / 1e6:.1f} MB from XPM in {firm_day['xpm_calls']} calls"
    )
    return {
        "runs": runs,
        "baseline": baseline,
        "ratio": ratio,
        "changed": changed,
        "users": users,
        "offices": offices,
        "day": firm_day,
        "setup_seconds": setup_seconds,
    }


def summarize_day(day: list[dict[str, Any]], full_read: dict[str, Any]) -> dict[str, Any]:
    """The XPM bytes of a firm-day: the hourly runs and the daily full read (measured in the
    bench's own daily run, nothing changed); the first sync is not part of it."""
    hourly = [
        {
            "changed": run["changed"],
            "seconds": round(run["seconds"], 3),
            "status": run["status"],
            "xpm_bytes": run["xpm_bytes"],
            "xpm_bytes_by_endpoint": run["xpm_bytes_by_endpoint"],
            "xpm_endpoints": run["sim_xpm_endpoints"],
            "token_refreshes": run["token_refreshes"],
            "clients_read": sum(run["counts"]["client"].values()),
            "active_writes": run["active_writes"],
            "active_items_read": run["active_items_read"],
        }
        for run in day
    ]
    hourly_bytes = sum(run["xpm_bytes"] for run in hourly)
    return {
        "hours": len(hourly),
        "share": DAY_SHARE,
        "changed_per_hour": hourly[0]["changed"] if hourly else 0,
        "hourly_bytes": hourly_bytes,
        "full_read_bytes": full_read["xpm_bytes"],
        "bytes": hourly_bytes + full_read["xpm_bytes"],
        "xpm_calls": sum(sum(run["xpm_endpoints"].values()) for run in hourly) + full_read["sim_xpm_calls"],
        "runs": hourly,
    }


def bench_failing(bench: Bench, size: int) -> dict[str, Any]:
    say(f"\n== {size:,} clients, {FAILING_SHARE:.0%} of them failing (no partner, no Default Partner) ==")
    started = time.monotonic()
    figures = measure_failing_firm(bench, size, share=FAILING_SHARE)
    say(
        f"{'run':42}{'wall s':>8}{'status':>9}{'XPM calls':>11}{'failed':>8}{'created':>9}"
        f"{'Active writes':>15}{'reads':>8}{'log writes':>12}{'largest item':>14}{'config item':>13}"
    )
    for name in FAILING_RUNS:
        run = figures["runs"][name]
        say(
            f"{FAILING_LABELS[name]:42}{run['seconds']:>8.1f}{run['status']:>9}{run['sim_xpm_calls']:>11}"
            f"{run['counts']['client']['failed']:>8}{run['counts']['client']['created']:>9}"
            f"{run['active_writes']:>15,}{run['active_items_read']:>8,}{run['sync_log']['items_written']:>12,}"
            f"{max(run['largest_item_bytes'].values()):>14,}{run['config_item_bytes']:>13,}"
        )
    figures["seconds"] = time.monotonic() - started
    return figures


def evaluate(results: dict[str, Any]) -> list[Target]:
    targets: list[Target] = []
    for size_text, figures in results["sizes"].items():
        size = int(size_text)
        runs = figures["runs"]
        for name in ("rerun", "daily"):
            writes = runs[name]["active_writes"]
            targets.append(
                Target(f"{size:,}: {RUN_LABELS[name]} writes 0 items", f"{writes} writes", "0", writes == 0)
            )
        rerun = runs["rerun"]
        endpoints = rerun["sim_xpm_endpoints"]
        calls = ", ".join(f"{n} {e}" for e, n in sorted(endpoints.items()))
        refresh = f" + {rerun['token_refreshes']} token refresh" if rerun["token_refreshes"] else ""
        targets.append(
            Target(
                f"{size:,}: no-change rerun makes the minimum XPM calls",
                f"{calls}{refresh}",
                "1 staff list + 1 client list (+ refresh when due)",
                endpoints == MINIMUM_CALLS,
            )
        )
        incremental = runs["incremental"]
        targets.append(
            Target(
                f"{size:,}: incremental run writes only the changed items",
                f"{incremental['active_writes']} writes for {figures['changed']} changed",
                f"= {figures['changed']}",
                incremental["active_writes"] == figures["changed"],
            )
        )
        if "users" in figures:
            allowed = MAX_ITEMS_READ_PER_CHANGED * figures["changed"] + figures["users"] + figures["offices"]
            read = incremental["active_items_read"]
            targets.append(
                Target(
                    f"{size:,}: Active items read by the incremental run",
                    f"{read:,} items for {figures['changed']:,} changed "
                    f"({(read - figures['users'] - figures['offices']) / figures['changed']:.2f} per changed "
                    f"record beyond {figures['users']} users and {figures['offices']} offices)",
                    f"<= {MAX_ITEMS_READ_PER_CHANGED} x {figures['changed']:,} + {figures['users']} "
                    f"+ {figures['offices']} = {allowed:,}",
                    read <= allowed,
                )
            )
        if size == INCREMENTAL_TIME_SIZE:
            ratio = incremental["seconds"] / rerun["seconds"]
            targets.append(
                at_most(
                    f"{size:,}: incremental run's wall time vs the no-change rerun",
                    f"{ratio:.1f}x ({incremental['seconds']:.1f}s vs {rerun['seconds']:.1f}s)",
                    ratio,
                    MAX_INCREMENTAL_VS_RERUN,
                    "{:.0f}x",
                )
            )
        day = figures.get("day")
        if day:
            calls_each = all(run["xpm_endpoints"] == MINIMUM_CALLS for run in day["runs"])
            targets.append(
                Target(
                    f"{size:,}: bytes downloaded from XPM per firm-day",
                    f"{day['bytes'] / 1e6:.2f} MB ({day['hours']} hourly runs at {day['share']:.1%} "
                    f"{day['hourly_bytes'] / 1e6:.2f} MB + daily full read "
                    f"{day['full_read_bytes'] / 1e6:.2f} MB)",
                    f"reported; each hourly run 2 XPM calls{'' if calls_each else ' (not so)'}",
                    calls_each,
                )
            )
        targets.append(
            at_most(
                f"{size:,}: full sync time vs baseline",
                f"{figures['ratio']:.2f}x ({runs['first']['seconds']:.1f}s vs "
                f"{figures['baseline']['seconds']:.1f}s)",
                figures["ratio"],
                MAX_BASELINE_RATIO,
                "{}x",
            )
        )
        if size == RSS_SIZE:
            peak = max(run["peak_rss_mb"] for run in runs.values())
            targets.append(
                at_most(f"{size:,}: worker peak RSS", f"{peak:.0f} MB", peak, MAX_PEAK_RSS_MB, "{:.0f} MB")
            )
    failing = results.get("failing")
    if failing:
        targets += failing_targets(failing)
    worker = next((i for i in results.get("imports", ()) if i["module"] == WORKER_MODULE), None)
    if worker is None:  # not measured in this invocation (--only)
        return targets
    split = (
        f" (in that import's trace, the project's own modules took {worker['project_ms']:.0f} ms)"
        if "project_ms" in worker
        else ""
    )
    floor = results.get("stack_floor")
    if floor:
        split += f"; the stack's floor alone {floor['ms']:.0f} ms"
    targets.append(
        at_most(
            "worker cold-start import",
            f"{worker['ms']:.0f} ms{split}",
            worker["ms"],
            MAX_WORKER_IMPORT_MS,
            "{:.0f} ms",
        )
    )
    dispatch = results.get("dispatch")
    if dispatch:
        targets.append(
            Target(
                f"dispatcher queues {dispatch['firms']:,} firms within its Lambda timeout",
                f"{dispatch['seconds']:.1f}s ({dispatch['queued']:,} queued)",
                f"< {dispatch['timeout_seconds']}s",
                dispatch["seconds"] < dispatch["timeout_seconds"] and dispatch["queued"] == dispatch["firms"],
            )
        )
    return targets


def failing_targets(failing: dict[str, Any]) -> list[Target]:
    """Issue 19's targets for the firm with failing clients."""
    runs = failing["runs"]
    first, retry, fixed = runs["first"], runs["retry"], runs["fixed"]
    size, count = failing["clients"], failing["failing"]
    name = f"{size:,} clients, {count:,} failing"
    largest = max(max(run["largest_item_bytes"].values()) for run in runs.values())
    config_item = max(run["config_item_bytes"] for run in runs.values())
    log_writes = retry["sync_log"]["items_written"]
    return [
        Target(
            f"{name}: the first sync completes",
            f"{first['status']}, {first['counts']['client']['failed']:,} failed, "
            f"{first['counts']['client']['created']:,} created, {first['failed_messages']} message failed",
            "partial, every failing client failed, the others created",
            first["status"] == "partial"
            and first["failed_messages"] == 0
            and first["counts"]["client"]["failed"] == count
            and first["counts"]["client"]["created"] == size - count,
        ),
        Target(
            f"{name}: the next hourly run's XPM calls and Active writes",
            f"{retry['sim_xpm_calls']} XPM calls, {retry['active_writes']} Active writes "
            f"({retry['counts']['client']['failed']:,} failed again; sync log: {log_writes:,} items written "
            f"in {retry['sync_log']['write_requests']:,} requests)",
            "2 XPM calls, 0 Active writes",
            retry["sim_xpm_endpoints"] == MINIMUM_CALLS and retry["active_writes"] == 0,
        ),
        at_most(
            f"{name}: the largest item written (any table, all three runs)",
            f"{largest:,} bytes",
            largest,
            MAX_ITEM_BYTES,
            "{:,} bytes",
        ),
        at_most(
            f"{name}: the config item",
            f"{config_item:,} bytes",
            config_item,
            MAX_CONFIG_ITEM_BYTES,
            "{:,} bytes",
        ),
        Target(
            f"{name}: the run after the cause is fixed in Active",
            f"{fixed['status']}, {fixed['counts']['client']['created']:,} created, "
            f"{fixed['counts']['client']['failed']} failed, {fixed['sim_xpm_calls']} XPM calls",
            f"success, {count:,} created, 2 XPM calls",
            fixed["status"] == "success"
            and fixed["counts"]["client"]["created"] == count
            and fixed["sim_xpm_endpoints"] == MINIMUM_CALLS,
        ),
    ]


def measure_imports(results: dict[str, Any], repeats: int) -> None:
    """The cold-start import of each handler from the built layer, with its yardsticks."""
    say("\n== cold-start import of each handler from the built layer (median of fresh interpreters) ==")
    layer = build_layer()
    results["imports"] = []
    for function in HANDLER_FUNCTIONS:
        figure = measure_import(function, layer, repeats=repeats)
        results["imports"].append(figure)
        heaviest = ", ".join(f"{h['module']} {h['ms']:.0f}" for h in figure["heaviest"][:4])
        say(f"{figure['module']:32}{figure['ms']:>8.0f} ms   (heaviest: {heaviest})")
    # What this machine takes for the one import no handler can do without: a yardstick.
    results["import_floor"] = measure_import("sync_worker", layer, statement="import boto3", repeats=repeats)
    say(f"{'for scale: import boto3 alone':32}{results['import_floor']['ms']:>8.0f} ms")
    # The least any worker on the chosen stack imports: the target's floor on this machine.
    results["stack_floor"] = measure_stack_floor(layer, repeats=repeats)
    say(f"{'the stack alone (stack_floor)':32}{results['stack_floor']['ms']:>8.0f} ms")
    # The part of the worker's import that the project writes, and the part it imports: the
    # stack's libraries with none of the project's code.
    libraries = measure_library_imports("sync_worker", layer)
    results["worker_libraries"] = libraries
    say(f"\n{import_split(libraries)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES), help="clients per firm")
    parser.add_argument("--quick", action="store_true", help="1,000 clients only (results-quick.json)")
    parser.add_argument("--dispatch-firms", type=int, default=10_000)
    parser.add_argument(
        "--failing-size",
        type=int,
        default=None,
        help=f"clients of the failing firm (default {FAILING_SIZE:,})",
    )
    parser.add_argument("--day-hours", type=int, default=DAY_HOURS, help="hourly runs of the firm-day")
    parser.add_argument("--import-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="default bench/results.json")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats of every run here")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"the parts to run, of {', '.join(PARTS)} (default all); targets of the others are not judged",
    )
    args = parser.parse_args(argv)
    parts = {part.strip() for part in args.only.split(",") if part.strip()}
    if unknown := parts - set(PARTS):
        parser.error(
            f"--only: unknown part(s) {', '.join(sorted(unknown))}; the parts are {', '.join(PARTS)}"
        )
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    failing_size = (
        args.failing_size if args.failing_size is not None else (1000 if args.quick else FAILING_SIZE)
    )
    out: Path = args.out or HERE / ("results-quick.json" if args.quick else "results.json")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "source": source(),
        "staff": STAFF,
        "parts": [part for part in PARTS if part in parts],
        "sizes": {},
    }
    say(f"xpm-sync benchmark, {results['date']} on {results['machine']['platform']}")
    say(f"{results['machine']['cpu_count']} CPUs, load average {results['machine']['load_average_at_start']}")

    if "imports" in parts:
        measure_imports(results, args.import_repeats)
    if args.dispatch_firms and "dispatch" in parts:
        # A moto server of its own: one that holds the sizes' 60,000 items spends most of each
        # request in garbage collection over its heap, which SQS and DynamoDB do not.
        with bench_stack() as bench:
            say(f"\n== dispatcher: {args.dispatch_firms:,} enabled firms ==")
            dispatch = measure_dispatch(bench, args.dispatch_firms)
        results["dispatch"] = dispatch
        say(
            f"queued {dispatch['queued']:,} messages in {dispatch['seconds']:.2f}s "
            f"({dispatch['messages_per_second']:.0f}/s; {dispatch['messages_on_queue']:,} on the queue; "
            f"dispatcher CPU {dispatch['cpu_seconds']:.1f}s, moto CPU {dispatch['moto_cpu_seconds']:.1f}s); "
            f"its CPU at {dispatch['memory_mb']} MB in Lambda ~{dispatch['lambda_cpu_seconds']:.1f}s; "
            f"Lambda timeout {dispatch['timeout_seconds']}s"
        )

    if "sizes" in parts:
        with bench_stack() as bench:
            say(f"\nmoto server {bench.moto_url}; XPM simulator {bench.sim.url}")
            for size in sizes:
                results["sizes"][str(size)] = bench_size(bench, size, args.profile, day_hours=args.day_hours)
                out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # partial
    if failing_size and "failing" in parts:
        # A moto server of its own, as for the dispatcher: the sizes' items stay out of its heap.
        with bench_stack() as bench:
            results["failing"] = bench_failing(bench, failing_size)

    targets = evaluate(results)
    results["targets"] = [asdict(t) for t in targets]
    results["total_seconds"] = round(time.monotonic() - started, 1)
    say("\n== targets ==")
    for target in targets:
        say(f"{'PASS' if target.passed else 'FAIL'}  {target.name}: {target.figure} (target {target.limit})")
    out.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    say(f"\nfigures written to {out} ({results['total_seconds']:.0f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
