"""``make bench``: the real sync path at 1,000, 10,000 and 50,000 clients, against a baseline.

For each size: a full first sync, a rerun with nothing changed, the daily full read with nothing
changed, and an incremental run after 1% of the clients were renamed in XPM. Then a baseline that
only downloads the same XML and batch-writes as many items, the cold-start import time of every
handler, and the dispatcher queueing 10,000 firms. Figures go to ``bench/results.json``.

python -m bench.run [--sizes 1000,10000,50000] [--quick] [--out PATH] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import (
    HANDLER_FUNCTIONS,
    STAFF,
    Bench,
    add_firm,
    bench_stack,
    build_layer,
    change_clients,
    force_full_read,
    measure_baseline,
    measure_dispatch,
    measure_import,
    measure_library_imports,
    measure_stack_floor,
    measure_sync,
    timed,
)

HERE = Path(__file__).resolve().parent
DEFAULT_SIZES = (1000, 10_000, 50_000)
RUNS = ("first", "rerun", "daily", "incremental")
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


def import_split(libraries: dict[str, Any]) -> str:
    """The worker's import split into its libraries and the project's own modules, in words."""
    packages = ", ".join(libraries["packages"])
    text = (
        f"Split of the worker's import, in CPU time of a fresh interpreter ({len(libraries['runs_cpu_ms'])} "
        f"turns): `import app` {libraries['handler_cpu_ms']:.0f} ms; the {libraries['modules']} modules it "
        f"loads from outside the project, alone and in the same order (from {packages} "
        "and the standard library), "
        f"{libraries['cpu_ms']:.0f} ms; so the project's own modules, with the library work they cause, "
        f"{libraries['project_cpu_ms']:.0f} ms (median of the turns' differences)."
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


def bench_size(bench: Bench, size: int, profile_dir: Path | None) -> dict[str, Any]:
    firm, setup_seconds = timed(add_firm, bench, size)
    say(f"\n== {size:,} clients, {STAFF} staff (setup {setup_seconds:.1f}s) ==")
    say(
        f"{'run':34}{'wall s':>9}{'rec/s':>9}{'XPM calls':>11}{'token':>7}"
        f"{'writes':>8}{'peak RSS MB':>13}{'status':>9}"
    )
    runs: dict[str, dict[str, Any]] = {}
    changed = 0
    for name in RUNS:
        if name == "daily":
            force_full_read(bench, firm)
        if name == "incremental":
            changed = change_clients(firm)
        profile = str(profile_dir / f"sync-{size}-{name}.prof") if profile_dir else None
        result = measure_sync(bench, firm, profile=profile)
        runs[name] = result
        say(
            f"{RUN_LABELS[name]:34}{result['seconds']:>9.2f}{result['records_per_second']:>9.0f}"
            f"{result['sim_xpm_calls']:>11}{result['token_refreshes']:>7}{result['active_writes']:>8}"
            f"{result['peak_rss_mb']:>13.0f}{result['status']:>9}"
        )
    baseline = measure_baseline(bench, firm, items=runs["first"]["active_writes"])
    ratio = runs["first"]["seconds"] / baseline["seconds"]
    say(
        f"{'baseline (download + batch write)':34}{baseline['seconds']:>9.2f}"
        f"{'':>9}{1:>11}{'':>7}{baseline['items']:>8}{baseline['peak_rss_mb']:>13.0f}"
    )
    say(
        f"  baseline: download {baseline['bytes'] / 1e6:.1f} MB in {baseline['download_seconds']:.2f}s, "
        f"{baseline['items']:,} items batch-written in {baseline['write_seconds']:.2f}s; "
        f"full sync / baseline = {ratio:.2f}x"
    )
    say(f"  incremental run: {changed} clients renamed in XPM")
    return {
        "runs": runs,
        "baseline": baseline,
        "ratio": ratio,
        "changed": changed,
        "setup_seconds": setup_seconds,
    }


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
        targets.append(
            Target(
                f"{size:,}: full sync time vs baseline",
                f"{figures['ratio']:.2f}x ({runs['first']['seconds']:.1f}s vs "
                f"{figures['baseline']['seconds']:.1f}s)",
                f"<= {MAX_BASELINE_RATIO}x",
                figures["ratio"] <= MAX_BASELINE_RATIO,
            )
        )
        if size == RSS_SIZE:
            peak = max(run["peak_rss_mb"] for run in runs.values())
            targets.append(
                Target(
                    f"{size:,}: worker peak RSS",
                    f"{peak:.0f} MB",
                    f"<= {MAX_PEAK_RSS_MB:.0f} MB",
                    peak <= MAX_PEAK_RSS_MB,
                )
            )
    worker = next(i for i in results["imports"] if i["module"] == WORKER_MODULE)
    libraries = results.get("worker_libraries")
    split = (
        f" (in CPU time, the project's own modules are {libraries['project_cpu_ms']:.0f} ms of "
        f"{libraries['handler_cpu_ms']:.0f} ms; its libraries alone {libraries['cpu_ms']:.0f} ms)"
        if libraries
        else ""
    )
    floor = results.get("stack_floor")
    if floor:
        split += f"; the stack's floor alone {floor['ms']:.0f} ms"
    targets.append(
        Target(
            "worker cold-start import",
            f"{worker['ms']:.0f} ms{split}",
            f"<= {MAX_WORKER_IMPORT_MS:.0f} ms",
            worker["ms"] <= MAX_WORKER_IMPORT_MS,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES), help="clients per firm")
    parser.add_argument("--quick", action="store_true", help="1,000 clients only (results-quick.json)")
    parser.add_argument("--dispatch-firms", type=int, default=10_000)
    parser.add_argument("--import-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="default bench/results.json")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats of every run here")
    args = parser.parse_args(argv)
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    out: Path = args.out or HERE / ("results-quick.json" if args.quick else "results.json")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "staff": STAFF,
        "sizes": {},
    }
    say(f"xpm-sync benchmark, {results['date']} on {results['machine']['platform']}")
    say(f"{results['machine']['cpu_count']} CPUs, load average {results['machine']['load_average_at_start']}")

    say("\n== cold-start import of each handler from the built layer (median of fresh interpreters) ==")
    layer = build_layer()
    results["imports"] = []
    for function in HANDLER_FUNCTIONS:
        figure = measure_import(function, layer, repeats=args.import_repeats)
        results["imports"].append(figure)
        heaviest = ", ".join(f"{h['module']} {h['ms']:.0f}" for h in figure["heaviest"][:4])
        say(f"{figure['module']:32}{figure['ms']:>8.0f} ms   (heaviest: {heaviest})")
    # What this machine takes for the one import no handler can do without: a yardstick.
    results["import_floor"] = measure_import(
        "sync_worker", layer, statement="import boto3", repeats=args.import_repeats
    )
    say(f"{'for scale: import boto3 alone':32}{results['import_floor']['ms']:>8.0f} ms")
    # The least any worker on the chosen stack imports: the target's floor on this machine.
    results["stack_floor"] = measure_stack_floor(layer, repeats=args.import_repeats)
    say(f"{'the stack alone (stack_floor)':32}{results['stack_floor']['ms']:>8.0f} ms")
    # The part of the worker's import that the project writes, and the part it imports: the
    # stack's libraries with none of the project's code.
    libraries = measure_library_imports("sync_worker", layer)
    results["worker_libraries"] = libraries
    say(f"\n{import_split(libraries)}")

    if args.dispatch_firms:
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

    with bench_stack() as bench:
        say(f"\nmoto server {bench.moto_url}; XPM simulator {bench.sim.url}")
        for size in sizes:
            results["sizes"][str(size)] = bench_size(bench, size, args.profile)
            out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")  # partial

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
