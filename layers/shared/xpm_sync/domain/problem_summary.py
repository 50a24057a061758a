"""What is wrong now, by cause (SPEC A5, B5 ``GET /integrations/xpm/problems/summary``, B6).

A firm with one partner missing from Active has hundreds of open problems of one code; what the
admin needs is that cause once, with how many records it blocks, a few of them by name and the
fix. The summary groups the open problems by code, and beside them what is new since the last
email and what has been fixed since then. The email and the summary route read the same thing.

The open problems are streamed once and never held: the summary keeps a handful of numbers and at
most ``EXAMPLES_PER_GROUP`` labels per code, so a firm with thousands of open problems costs no more
memory than a firm with three. The problems fixed since the last email are held, one per record and
code (a problem fixed, broken and fixed again is one fix; one broken again is no fix at all).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from xpm_sync.domain.clock import parse_iso
from xpm_sync.domain.entries import Severity
from xpm_sync.domain.problems import ClosedProblem, RecordState

EXAMPLES_PER_GROUP = 5


@dataclass(frozen=True)
class ProblemGroup:
    """The open problems of one code: the shape of one ``groups`` item of the summary route."""

    code: str
    severity: Severity
    count: int
    suggestion: str
    examples: tuple[str, ...]  # the labels of up to EXAMPLES_PER_GROUP of its records


@dataclass(frozen=True)
class FixedGroup:
    """The problems of one code closed since the last email."""

    code: str
    count: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class ProblemSummary:
    groups: tuple[ProblemGroup, ...]  # every open problem, by code, the most pressing first
    open: int
    fixed_since_last_email: int
    # The open problems first seen after the last email, by code (all of them, if never emailed).
    new: tuple[ProblemGroup, ...] = ()
    new_since_last_email: int = 0
    fixed: tuple[FixedGroup, ...] = ()


@dataclass
class _Tally:
    code: str
    severity: Severity
    suggestion: str
    run_level: bool
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, label: str, severity: Severity, run_level: bool) -> None:
        self.count += 1
        # A code keeps one severity in the catalogue; should two ever meet, the group is as grave
        # as its gravest problem, and a run-level one (it blocks every record) leads.
        if severity == "error":
            self.severity = "error"
        self.run_level = self.run_level or run_level
        if len(self.examples) < EXAMPLES_PER_GROUP and label not in self.examples:
            self.examples.append(label)

    def group(self) -> ProblemGroup:
        return ProblemGroup(self.code, self.severity, self.count, self.suggestion, tuple(self.examples))


def _pressing_first(tallies: Iterable[_Tally]) -> tuple[ProblemGroup, ...]:
    """Run-level problems first (they stop the whole sync), then errors, then the most records."""
    ordered = sorted(tallies, key=lambda t: (not t.run_level, t.severity != "error", -t.count, t.code))
    return tuple(tally.group() for tally in ordered)


def summarise_problems(
    open_states: Iterable[RecordState],
    fixed: Iterable[ClosedProblem],
    *,
    last_emailed_at: str | None,
    hidden: Collection[str] = (),
) -> ProblemSummary:
    """The firm's open problems grouped by code, what is new since ``last_emailed_at`` and what was
    fixed since (``fixed``: the problems closed after it, as ``RecordStates.fixed_after`` reads
    them). A firm never emailed has everything new. Problems of a ``hidden`` code are not shown,
    but still open: an earlier fix of one is no fix."""
    since = parse_iso(last_emailed_at) if last_emailed_at is not None else None
    # One fix per (record, code), its last closing: B6's problem is the pair, not each closing.
    fixes = {(closed.key, closed.code): closed for closed in fixed}
    groups: dict[str, _Tally] = {}
    new: dict[str, _Tally] = {}
    for state in open_states:
        run_level = state.entity == "run"
        for problem in state.problems:
            fixes.pop((state.key, problem.code), None)  # open again: not fixed
            if problem.code in hidden:
                continue
            tally = groups.setdefault(
                problem.code, _Tally(problem.code, problem.severity, problem.suggestion, run_level)
            )
            tally.add(state.label, problem.severity, run_level)
            if since is None or parse_iso(problem.opened_at or problem.first_seen) > since:
                tally = new.setdefault(
                    problem.code, _Tally(problem.code, problem.severity, problem.suggestion, run_level)
                )
                tally.add(state.label, problem.severity, run_level)
    fixed_by_code: dict[str, _Tally] = {}
    for closed in fixes.values():
        # The fixed items keep no severity or suggestion: the fix is done, only the count matters.
        tally = fixed_by_code.setdefault(closed.code, _Tally(closed.code, "warning", "", run_level=False))
        tally.add(closed.label, "warning", run_level=False)
    return ProblemSummary(
        groups=_pressing_first(groups.values()),
        open=sum(tally.count for tally in groups.values()),
        fixed_since_last_email=sum(group.count for group in fixed_by_code.values()),
        new=_pressing_first(new.values()),
        new_since_last_email=sum(tally.count for tally in new.values()),
        fixed=tuple(
            FixedGroup(tally.code, tally.count, tuple(tally.examples))
            for tally in sorted(fixed_by_code.values(), key=lambda tally: (-tally.count, tally.code))
        ),
    )
