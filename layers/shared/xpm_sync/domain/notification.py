"""The failure email (SPEC A5), as plain text and HTML: what it says, never how it is sent.

``adapters.notifier`` decides whether the firm may be emailed now and sends it through SES.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from xpm_sync.domain.clock import parse_iso
from xpm_sync.domain.entries import Entry
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.runs import OUTCOMES, SyncRun

TOP_ENTRIES = 10
DEFAULT_SYNC_NAME = "Xero Practice Manager sync"

# Entry messages quote error text from XPM and Xero. None should ever carry a credential, but an
# email leaves our control for good, so anything shaped like a bearer token or a JWT is masked.
_TOKEN_LIKE = re.compile(
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def monitoring_url(frontend_url: str, run_id: str) -> str:
    """The run's page in Sync Monitoring."""
    return f"{frontend_url.rstrip('/')}/admin/integrations/xpm/runs/{quote(run_id, safe='')}"


def _clean(text: str) -> str:
    return _TOKEN_LIKE.sub("[redacted]", text)


def _one_line(text: str) -> str:
    # SES rejects a subject with a line break, and a header must never be split by data.
    return _CONTROL.sub(" ", text).strip()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _ordered(entries: Iterable[Entry]) -> list[Entry]:
    """Run-level entries first (they explain a failed run), then errors before warnings."""
    return sorted(entries, key=lambda entry: (entry.entity != "run", entry.severity != "error"))


_ENTITY_TITLES = {"user": "Users", "client": "Clients"}


def _counts_lines(run: SyncRun) -> list[tuple[str, dict[str, int]]]:
    return [
        (
            _ENTITY_TITLES.get(entity, entity.title()),
            {outcome: counts.get(outcome, 0) for outcome in OUTCOMES},
        )
        for entity, counts in run.counts.items()
    ]


def render_email(
    run: SyncRun,
    entries: list[Entry],
    config: FirmConfig,
    *,
    firm_name: str,
    monitoring_url: str,
) -> RenderedEmail:
    """The email for a failed or partial run, as plain text and as HTML (every value escaped)."""
    sync_name = _one_line(config.sync_name or DEFAULT_SYNC_NAME)
    firm = _one_line(firm_name)
    errors = sum(1 for entry in entries if entry.severity == "error")
    warnings = len(entries) - errors
    if run.status == "failed":
        headline = f"The {sync_name} for {firm} could not complete."
        subject = f"{sync_name} failed for {firm}"
    else:
        headline = f"The {sync_name} for {firm} finished, but some records could not be synced."
        subject = f"{sync_name} for {firm}: {_plural(errors, 'error')}"
    ordered = _ordered(entries)
    top = ordered[:TOP_ENTRIES]
    run_level = [entry for entry in entries if entry.entity == "run"]
    when = f"started {run.started_at}" + (f", finished {run.finished_at}" if run.finished_at else "")
    shown = f"the first {len(top)} of {len(entries)}, " if len(entries) > len(top) else ""

    text = [
        headline,
        "",
        f"Status: {run.status} ({run.trigger} run {run.run_id}, {when})",
        f"Found: {_plural(errors, 'error')}, {_plural(warnings, 'warning')}",
    ]
    text += [f"What went wrong: {_clean(entry.message)}" for entry in run_level]
    text += ["", "Records:"]
    for title, counts in _counts_lines(run):
        text.append(f"  {title}: " + ", ".join(f"{counts[outcome]} {outcome}" for outcome in OUTCOMES))
    text += [f"XPM calls: {run.xpm_calls}", "", f"Problems ({shown}errors first):"]
    for number, entry in enumerate(top, start=1):
        text += [
            f"{number}. [{entry.severity}] {_clean(entry.label)} ({entry.code})",
            f"   {_clean(entry.message)}",
            f"   How to fix: {entry.suggestion}",
        ]
    text += [
        "",
        f"See the whole log in Sync Monitoring: {monitoring_url}",
        "",
        "You receive at most one of these emails per day; later problems are in Sync Monitoring.",
    ]

    e = html.escape
    rows = "".join(
        f"<tr><th align='left'>{e(title)}</th>"
        + "".join(f"<td align='right'>{counts[outcome]}</td>" for outcome in OUTCOMES)
        + "</tr>"
        for title, counts in _counts_lines(run)
    )
    items = "".join(
        f"<li><strong>[{e(entry.severity)}] {e(_clean(entry.label))}</strong> <code>{e(entry.code)}</code>"
        f"<br>{e(_clean(entry.message))}<br><em>How to fix:</em> {e(entry.suggestion)}</li>"
        for entry in top
    )
    causes = "".join(
        f"<p><strong>What went wrong:</strong> {e(_clean(entry.message))}</p>" for entry in run_level
    )
    body = (
        "<!DOCTYPE html><html><body>"
        f"<p>{e(headline)}</p>"
        f"<p>Status: <strong>{e(run.status)}</strong> ({e(run.trigger)} run {e(run.run_id)}, {e(when)})<br>"
        f"Found: {_plural(errors, 'error')}, {_plural(warnings, 'warning')}</p>"
        f"{causes}"
        "<table cellpadding='4'><tr><th></th>"
        + "".join(f"<th>{e(outcome)}</th>" for outcome in OUTCOMES)
        + f"</tr>{rows}</table>"
        f"<p>XPM calls: {run.xpm_calls}</p>"
        f"<p>Problems ({e(shown)}errors first):</p><ol>{items}</ol>"
        f'<p><a href="{e(monitoring_url, quote=True)}">See the whole log in Sync Monitoring</a></p>'
        "<p>You receive at most one of these emails per day; later problems are in Sync Monitoring.</p>"
        "</body></html>"
    )
    return RenderedEmail(subject=_one_line(subject), text="\n".join(text) + "\n", html=body)


# --- When to email (SPEC A5) ---------------------------------------------------------------------

# Run-level failures that can clear by themselves: XPM down or timing out, a rate limit, an
# unexpected error the next run does not meet. The admin hears of them only when they persist.
SELF_CLEARING_FAILURES = frozenset({"XPM_UNAVAILABLE", "XPM_RATE_LIMITED", "XPM_TOO_SLOW", "INTERNAL_ERROR"})
PERSISTS_AFTER_RUNS = 3
PERSISTS_AFTER = timedelta(hours=3)


def should_notify(
    status: str,
    failure_code: str | None,
    *,
    failures_in_a_row: int,
    last_completed_run_started_at: str | None,
    connected_at: str | None,
    now: datetime,
) -> bool:
    """Whether a finished run is worth an email (the 24-hour cap is applied after, by the notifier).

    Record errors and problems only the admin can fix are told at once. A self-clearing failure
    is told from the third such run in a row (``failures_in_a_row`` counts this one), or once the
    firm has had no completed run for 3 hours.
    """
    if status not in ("failed", "partial"):
        return False
    if status == "partial" or failure_code not in SELF_CLEARING_FAILURES:
        return True
    if failures_in_a_row >= PERSISTS_AFTER_RUNS:
        return True
    since = last_completed_run_started_at or connected_at
    return since is not None and now - parse_iso(since) >= PERSISTS_AFTER
