"""Open problems (SPEC B6): what is wrong now, per record, across runs.

A problem is one (record, code) pair that the latest run to see that record reported. The sync
keeps, per record with something open, one :class:`RecordState`: its problems (first and last
seen, how many runs reported each) and, when the record failed, the copy XPM last sent, which the
next runs retry from without asking XPM again (SPEC A7). A record that syncs cleanly, or that XPM
no longer lists, has no state: its problems are closed, and each closed problem counts as fixed
until the next email.

Nothing here grows with the firm: a state holds one record's few problems and one record's copy.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace

from xpm_sync.domain.entries import Entry, EntryEntity, Severity

RUN_KEY = "run"


@dataclass(frozen=True)
class Problem:
    code: str
    severity: Severity
    message: str
    suggestion: str
    first_seen: str  # the start time of the first run that reported it (ISO 8601 UTC)
    last_seen: str  # ... and of the latest
    runs: int  # how many runs reported it
    # When the sync first recorded it (iso_precise): what is new since an email is told from this,
    # since run start times, to the second, cannot order two runs in one second. None for problems
    # recorded before it was kept; their first_seen stands in.
    opened_at: str | None = None


@dataclass(frozen=True, kw_only=True)
class RecordRef:
    """The record a state or a sighting is about, as an admin and the sync know it."""

    entity: EntryEntity
    key: str  # record_key(): how its state is found again
    label: str
    xpm_uuid: str | None = None
    web_url: str | None = None  # XPM's page for it, when XPM sent one
    # The XPM record as last sent (JSON), while it awaits a retry (SPEC A7).
    retry_copy: str | None = None


@dataclass(frozen=True, kw_only=True)
class RecordState(RecordRef):
    """One record's open problems, and the copy it is retried from."""

    problems: tuple[Problem, ...]
    # The run that last saw the record: a full read closes what it did not see.
    seen_run: str | None = None

    @property
    def codes(self) -> set[str]:
        return {problem.code for problem in self.problems}


@dataclass(frozen=True)
class ClosedProblem:
    entity: EntryEntity
    key: str
    code: str
    label: str
    closed_at: str
    xpm_uuid: str | None = None


def record_key(entity: EntryEntity, xpm_uuid: str | None, label: str) -> str:
    """How a record's state is found again: by its XPM UUID, or by its label when XPM sent none."""
    if entity == "run":
        return RUN_KEY
    return f"{entity}#{xpm_uuid.strip().lower()}" if xpm_uuid else f"{entity}#label#{label}"


@dataclass(frozen=True, kw_only=True)
class Sighting(RecordRef):
    """What one run found about one record: its entries, and the copy to retry it from if it failed."""

    entries: tuple[Entry, ...]

    def merged(self, later: Sighting) -> Sighting:
        """The same record reported twice in one run (a repeated UUID): every problem counts, the
        later copy (if any) is kept."""
        return replace(
            later,
            entries=self.entries + later.entries,
            retry_copy=later.retry_copy or self.retry_copy,
            web_url=later.web_url or self.web_url,
        )


def reconcile(
    prior: RecordState | None,
    sighting: Sighting | None,
    *,
    run_id: str,
    run_started_at: str,
    now: str,
    unjudged: Collection[str] = (),
) -> tuple[RecordState | None, list[ClosedProblem]]:
    """The record's state after this run saw it (``sighting``) or found it gone (``None``), and the
    problems this closes. A problem whose code is ``unjudged`` (the run stopped before it could
    look) stays as it was: neither seen again nor closed."""
    before = {problem.code: problem for problem in prior.problems} if prior is not None else {}
    # Seen again by the run that already counted it (a later part of it: a list XPM reordered, a
    # record sent either side of a part's end): one run, counted once.
    this_run_again = prior is not None and prior.seen_run == run_id
    problems: dict[str, Problem] = {}
    for entry in sighting.entries if sighting is not None else ():
        if entry.code in problems:
            continue
        earlier = before.get(entry.code)
        problems[entry.code] = Problem(
            code=entry.code,
            severity=entry.severity,
            message=entry.message,
            suggestion=entry.suggestion,
            first_seen=earlier.first_seen if earlier is not None else run_started_at,
            last_seen=run_started_at,
            # A problem an earlier write of this run only kept (unjudged then) was not counted yet.
            runs=earlier.runs + (0 if this_run_again and earlier.last_seen == run_started_at else 1)
            if earlier is not None
            else 1,
            opened_at=earlier.opened_at if earlier is not None else now,
        )
    for code, earlier in before.items():
        if code in unjudged and code not in problems:
            problems[code] = earlier
    label = sighting.label if sighting is not None else (prior.label if prior is not None else "")
    entity = sighting.entity if sighting is not None else (prior.entity if prior else "run")
    key = sighting.key if sighting is not None else (prior.key if prior else RUN_KEY)
    xpm_uuid = sighting.xpm_uuid if sighting is not None else (prior.xpm_uuid if prior else None)
    closed = [
        ClosedProblem(entity=entity, key=key, code=code, label=label, closed_at=now, xpm_uuid=xpm_uuid)
        for code in before
        if code not in problems
    ]
    retry_copy = sighting.retry_copy if sighting is not None else None
    if not problems and retry_copy is None:
        return None, closed
    state = RecordState(
        entity=entity,
        key=key,
        label=label,
        problems=tuple(problems.values()),
        xpm_uuid=xpm_uuid,
        web_url=sighting.web_url if sighting is not None else None,
        retry_copy=retry_copy,
        seen_run=run_id,
    )
    return state, closed


def run_level_sighting(entries: Iterable[Entry]) -> Sighting:
    """A run's own problems (entity ``run``), kept as one state: each closes at the next run that
    does not report it."""
    return Sighting(
        entity="run",
        key=RUN_KEY,
        label="Sync run",
        entries=tuple(entry for entry in entries if entry.entity == "run"),
    )
