"""The failure email (SPEC A5), as plain text and HTML: what it says, never how it is sent.

The email leads with what is new since the last email and what has been fixed since then, then
the open problems grouped by code with their counts: the admin of a firm with 312 clients blocked
by one missing partner reads that cause once, not 312 lines. It fits on a screen whatever the
firm's size (a few causes, a few records each, "and N more"), and links to Sync Monitoring for
the rest. ``domain.problem_summary`` works out what it says; ``adapters.notifier`` decides whether
the firm may be emailed now and sends it through SES.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from xpm_sync.domain.clock import parse_iso
from xpm_sync.domain.entries import Entry, shorten, without_credentials
from xpm_sync.domain.faults import SYSTEM_FAULT_CODES
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.problem_summary import FixedGroup, ProblemGroup, ProblemSummary
from xpm_sync.domain.runs import OUTCOMES, SyncRun

# What keeps the email to a screen: causes per section, records named per cause, characters per name.
EMAIL_GROUPS = 5
EMAIL_EXAMPLES = 3
EMAIL_LABEL_CHARS = 80
EMAIL_MESSAGE_CHARS = 300
DEFAULT_SYNC_NAME = "Xero Practice Manager sync"

# Control characters, Unicode's other line breaks (NEL, line and paragraph separators: a client
# name must not start a line of its own), and the bidirectional embeddings, overrides and isolates
# (one left open in a name would reverse how the rest of its line reads).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def monitoring_url(frontend_url: str, run_id: str) -> str:
    """The run's page in Sync Monitoring."""
    return f"{frontend_url.rstrip('/')}/admin/integrations/xpm/runs/{quote(run_id, safe='')}"


def _clean(text: str) -> str:
    # An email leaves our control for good: masked again, whatever the text's way here.
    return without_credentials(text)


def _one_line(text: str) -> str:
    # SES rejects a subject with a line break, and a header must never be split by data.
    return _CONTROL.sub(" ", text).strip()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


_ENTITY_TITLES = {"user": "Users", "client": "Clients"}


def _counts_lines(run: SyncRun) -> list[str]:
    return [
        f"{_ENTITY_TITLES.get(entity, entity.title())}: "
        + ", ".join(f"{counts.get(outcome, 0)} {outcome}" for outcome in OUTCOMES)
        for entity, counts in run.counts.items()
    ]


# --- What the email says, once; then written as text and as HTML ---------------------------------


@dataclass(frozen=True)
class _Heading:
    text: str


@dataclass(frozen=True)
class _Paragraph:
    lines: tuple[str, ...]


@dataclass(frozen=True)
class _Item:
    text: str
    fix: str | None = None  # how to fix it, under the item


@dataclass(frozen=True)
class _List:
    items: tuple[_Item, ...]
    numbered: bool = False
    more: str | None = None  # what the list leaves to Sync Monitoring


@dataclass(frozen=True)
class _Link:
    text: str
    url: str


_Block = _Heading | _Paragraph | _List | _Link


def _named(examples: Sequence[str], count: int) -> str:
    """A few of the records by name, and how many more there are."""
    shown = [_one_line(shorten(label, EMAIL_LABEL_CHARS)) for label in examples[:EMAIL_EXAMPLES]]
    more = count - len(shown)
    if not shown:
        return _plural(count, "record")
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _cause(group: ProblemGroup | FixedGroup) -> str:
    severity = f"[{group.severity}] " if isinstance(group, ProblemGroup) else ""
    return f"{severity}{group.code} ({group.count}): {_named(group.examples, group.count)}"


def _causes(groups: Sequence[ProblemGroup | FixedGroup], *, with_fixes: bool = False) -> _List:
    """The first few causes, and how many more there are."""
    items = tuple(
        _Item(_cause(group), fix=group.suggestion if isinstance(group, ProblemGroup) and with_fixes else None)
        for group in groups[:EMAIL_GROUPS]
    )
    hidden = groups[EMAIL_GROUPS:]
    problems = sum(group.count for group in hidden)
    more = (
        f"... and {_plural(len(hidden), 'more cause')} ({_plural(problems, 'problem')}) in Sync Monitoring."
    )
    return _List(items, numbered=with_fixes, more=more if hidden else None)


def _when(moment: str) -> str:
    when = parse_iso(moment)
    return f"{when.day} {when:%b %Y %H:%M} UTC"


def _blocks(
    run: SyncRun,
    entries: Iterable[Entry],
    summary: ProblemSummary,
    *,
    headline: str,
    last_emailed_at: str | None,
    link: str,
) -> list[_Block]:
    # A run has a cause or two of its own (XPM refused, a setting missing); their messages say what
    # no code can, so they follow the headline, each on one line and cut to a readable length.
    causes = tuple(
        f"What went wrong: {_one_line(shorten(entry.message, EMAIL_MESSAGE_CHARS))}"
        for entry in entries
        if entry.entity == "run"
    )[:EMAIL_GROUPS]
    blocks: list[_Block] = [_Paragraph((headline, *causes))]

    if last_emailed_at is not None:
        new_title = f"New since the last email ({_when(last_emailed_at)})"
        fixed_title = "Fixed since then"
    else:
        new_title, fixed_title = "New", "Fixed in the last 90 days"
    blocks.append(_Heading(f"{new_title}: {_plural(summary.new_since_last_email, 'problem')}"))
    if summary.new:
        blocks.append(_causes(summary.new))
    blocks.append(_Heading(f"{fixed_title}: {_plural(summary.fixed_since_last_email, 'problem')}"))
    if summary.fixed:
        blocks.append(_causes(summary.fixed))

    blocks.append(_Heading(f"Open problems now: {summary.open}, by cause"))
    if summary.groups:
        blocks.append(_causes(summary.groups, with_fixes=True))

    when = f"started {run.started_at}" + (f", finished {run.finished_at}" if run.finished_at else "")
    blocks.append(
        _Paragraph(
            (
                f"This run: {run.status} ({run.trigger} run {run.run_id}, {when})",
                *_counts_lines(run),
                f"XPM calls: {run.xpm_calls}",
            )
        )
    )
    blocks.append(_Link("See every open problem and the whole log in Sync Monitoring", link))
    blocks.append(
        _Paragraph(
            ("You receive at most one of these emails per day; later problems are in Sync Monitoring.",)
        )
    )
    return blocks


def _as_text(blocks: Iterable[_Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if lines and not isinstance(block, _List):  # a list sits right under its heading
            lines.append("")
        if isinstance(block, _Heading):
            lines.append(_clean(block.text))
        elif isinstance(block, _Paragraph):
            lines += [_clean(line) for line in block.lines]
        elif isinstance(block, _List):
            for number, item in enumerate(block.items, start=1):
                bullet = f"{number}. " if block.numbered else "- "
                lines.append(bullet + _clean(item.text))
                if item.fix is not None:
                    lines.append(f"   How to fix: {_clean(item.fix)}")
            if block.more is not None:
                lines.append(_clean(block.more))
        else:
            lines.append(f"{_clean(block.text)}: {block.url}")
    return "\n".join(lines) + "\n"


def _as_html(blocks: Iterable[_Block]) -> str:
    def e(text: str) -> str:
        return html.escape(_clean(text))

    parts: list[str] = []
    for block in blocks:
        if isinstance(block, _Heading):
            parts.append(f"<h3>{e(block.text)}</h3>")
        elif isinstance(block, _Paragraph):
            parts.append("<p>" + "<br>".join(e(line) for line in block.lines) + "</p>")
        elif isinstance(block, _List):
            tag = "ol" if block.numbered else "ul"
            items = "".join(
                f"<li>{e(item.text)}"
                + (f"<br><em>How to fix:</em> {e(item.fix)}" if item.fix is not None else "")
                + "</li>"
                for item in block.items
            )
            parts.append(f"<{tag}>{items}</{tag}>")
            if block.more is not None:
                parts.append(f"<p>{e(block.more)}</p>")
        else:
            parts.append(f'<p><a href="{html.escape(block.url, quote=True)}">{e(block.text)}</a></p>')
    return "<!DOCTYPE html><html><body>" + "".join(parts) + "</body></html>"


def render_email(
    run: SyncRun,
    entries: list[Entry],
    config: FirmConfig,
    summary: ProblemSummary,
    *,
    firm_name: str,
    monitoring_url: str,
) -> RenderedEmail:
    """The email for a failed or partial run (``entries``: the run's own log, whose run-level
    messages say what went wrong), as plain text and as HTML (every value escaped)."""
    sync_name = _one_line(config.sync_name or DEFAULT_SYNC_NAME)
    firm = _one_line(firm_name)
    if run.status == "failed":
        headline = f"The {sync_name} for {firm} could not complete."
        subject = f"{sync_name} failed for {firm}"
    else:
        headline = f"The {sync_name} for {firm} finished, but some records could not be synced."
        subject = f"{sync_name} for {firm}: {_plural(summary.open, 'open problem')}"
        if summary.new_since_last_email:
            subject += f", {summary.new_since_last_email} new"
    blocks = _blocks(
        run,
        entries,
        summary,
        headline=headline,
        last_emailed_at=config.last_notified_at,
        link=monitoring_url,
    )
    return RenderedEmail(subject=_clean(_one_line(subject)), text=_as_text(blocks), html=_as_html(blocks))


# --- When to email (SPEC A5) ---------------------------------------------------------------------

# Run-level failures the admin cannot fix, which clear by themselves or by an operator's hand: XPM
# down, timing out or answering what cannot be read, a rate limit, an unexpected error, the app's
# own credentials (domain.faults' system faults). The admin hears of them only when they persist.
SELF_CLEARING_FAILURES = SYSTEM_FAULT_CODES
PERSISTS_AFTER_RUNS = 3
PERSISTS_AFTER = timedelta(hours=3)


def should_notify(
    status: str,
    failure_code: str | None,
    *,
    failures_in_a_row: int,
    expected_to_sync_since: str | None,
    now: datetime,
    failing_since: str | None = None,
) -> bool:
    """Whether a finished run is worth an email (the 24-hour cap is applied after, by the notifier).

    Record errors and problems only the admin can fix are told at once. A self-clearing failure
    is told from the third such run in a row (``failures_in_a_row`` counts this one), or once the
    firm has had no completed run for 3 hours: counted from ``expected_to_sync_since``
    (``FirmConfig.expected_to_sync_since``: the last completed run's end, or a later connection or
    Start Sync), else from the first run of this streak of failures (``failing_since``).
    """
    if status not in ("failed", "partial"):
        return False
    if status == "partial" or failure_code not in SELF_CLEARING_FAILURES:
        return True
    if failures_in_a_row >= PERSISTS_AFTER_RUNS:
        return True
    since = expected_to_sync_since or failing_since
    return since is not None and now - parse_iso(since) >= PERSISTS_AFTER
