"""Markdown tables of a results file, for bench/README.md: ``python -m bench.report [results.json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.run import RUN_LABELS, RUNS


def tables(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"Run of {results['date']} on `{machine['platform']}`, {machine['cpu_count']} CPUs, Python "
        f"{machine['python']}; load average at start {machine['load_average_at_start']} (the machine "
        "was shared with other jobs).",
        "",
        "| clients | run | wall s | worker CPU s | moto CPU s | records/s | XPM calls | token refreshes "
        "| Active writes | Active requests | peak RSS MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for size, figures in results["sizes"].items():
        for name in RUNS:
            run = figures["runs"][name]
            requests = ", ".join(
                f"{n} {op}" for op, n in sorted(run["active_requests"].items()) if op != "items written"
            )
            lines.append(
                f"| {int(size):,} | {RUN_LABELS[name]} | {run['seconds']:.1f} | {run['cpu_seconds']:.1f} "
                f"| {run['moto_cpu_seconds']:.1f} | {run['records_per_second']:.0f} | {run['sim_xpm_calls']} "
                f"| {run['token_refreshes']} | {run['active_writes']:,} | {requests} "
                f"| {run['peak_rss_mb']:.0f} |"
            )
        base = figures["baseline"]
        lines.append(
            f"| {int(size):,} | baseline: download {base['bytes'] / 1e6:.1f} MB "
            f"({base['download_seconds']:.1f} s) + batch-write ({base['write_seconds']:.1f} s) "
            f"| {base['seconds']:.1f} | {base['cpu_seconds']:.1f} "
            f"| {base['moto_cpu_seconds']:.1f} | | 1 | | {base['items']:,} | | {base['peak_rss_mb']:.0f} |"
        )
        lines.append(
            f"| {int(size):,} | **full sync / baseline** | **{figures['ratio']:.2f}x** | | | | | | | | |"
        )
    lines += [
        "",
        "| handler module | import ms (median) | runs ms | heaviest imports (ms) |",
        "|---|---:|---|---|",
    ]
    for item in results["imports"]:
        heaviest = ", ".join(f"{h['module']} {h['ms']:.0f}" for h in item["heaviest"][:4])
        lines.append(f"| `{item['module']}` | {item['ms']:.0f} | {item['runs_ms']} | {heaviest} |")
    floor = results.get("import_floor")
    if floor:
        lines.append(f"| for scale: `import boto3` alone | {floor['ms']:.0f} | {floor['runs_ms']} | |")
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


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results.json"
    print(tables(json.loads(path.read_text(encoding="utf-8"))))


if __name__ == "__main__":
    main()
