"""One firm's sync run, start to finish (SPEC A1-A7, B6).

A run reads XPM's staff (one call) and syncs users, then streams clients: all of them on a full
read (the first run, one a day, and every preview), else only those modified since the last
completed run began. An incremental run then retries, from the copies the sync kept, the records
that failed before (SPEC A7): no XPM call, and Active read only by key. What each record reported
becomes its state in the sync log (open problems, SPEC B6); a full read closes the problems of
records XPM no longer lists.

A run that runs short of invocation time saves a checkpoint and queues its own continuation; an
answer arriving too slowly for any record to be applied, twice in a row, fails the run with
``XPM_TOO_SLOW``. Problems with single records make a run ``partial``, problems that stop it
``failed``. A preview (``dry_run``) plans the same way and writes nothing to Active and no sync
state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, Protocol

from xpm_sync.adapters.metrics import record_run_metrics
from xpm_sync.adapters.notifier import NotifyResult
from xpm_sync.adapters.tokens import FirmDisconnected, NeedsReconnect
from xpm_sync.adapters.xero_identity import (
    AppCredentialsUnavailable,
    InvalidClient,
    InvalidGrant,
    XeroIdentityError,
)
from xpm_sync.adapters.xpm.errors import (
    XpmAuthError,
    XpmBadResponse,
    XpmError,
    XpmRateLimited,
    XpmTooSlow,
    XpmUnavailable,
    XpmWrongTenant,
)
from xpm_sync.domain import entries as codes
from xpm_sync.domain.clock import Clock, iso, iso_precise, parse_iso
from xpm_sync.domain.entries import Entry, EntryKind
from xpm_sync.domain.faults import failed_run_fault
from xpm_sync.domain.firm import Checkpoint, FirmConfig, full_read_due, inputs_changed
from xpm_sync.domain.hourly import KEEP_ALIVE_AFTER, last_refresh
from xpm_sync.domain.near_match import UnlinkedClients
from xpm_sync.domain.notification import SELF_CLEARING_FAILURES, should_notify
from xpm_sync.domain.problems import RUN_KEY, RecordState, reconcile, run_level_sighting
from xpm_sync.domain.runs import RUN_RETENTION, SyncRun, Trigger, new_counts, new_run_id
from xpm_sync.domain.xpm_records import XpmClientRecord
from xpm_sync.observability import logger
from xpm_sync.runtime import unlimited
from xpm_sync.sync.clients import ClientSync, waits_on_people
from xpm_sync.sync.findings import RunFindings
from xpm_sync.sync.ports import (
    AccessTokens,
    ActiveStore,
    Configs,
    Continuations,
    FirmTokenSource,
    MatchStore,
    Runs,
    StateStore,
    XpmSource,
)
from xpm_sync.sync.users import UserSync

# Clients modified this close to the last run's start are read again: clocks and XPM's own
# indexing are not exact, and reading a record twice costs nothing (unchanged records are not written).
MODIFIED_SINCE_MARGIN = timedelta(minutes=5)
# A queued continuation is delivered at once, or again after the queue's visibility timeout
# (template.yaml: 90 minutes) if a delivery failed; after this long it is taken as lost.
CONTINUATION_LOST_AFTER = timedelta(hours=2)
# With less time than this left in the invocation, a run saves a checkpoint and queues its own
# continuation: enough to write the entries so far, the record states, the run and the checkpoint.
CHECKPOINT_MARGIN_SECONDS = 60.0
# What a part keeps after the XPM client's reading deadline to write its checkpoint, once it has
# applied the records it already read (adapters.xpm.client.READ_DEADLINE_MARGIN_SECONDS is 45).
FINISHING_MARGIN_SECONDS = 20.0
# Records looked up in Active together (incremental runs read by key, a batch of keys at a time).
LOOKUP_BATCH = 100
# Parts in a row that apply nothing before the run gives up with XPM_TOO_SLOW (SPEC A7).
PARTS_WITHOUT_PROGRESS_LIMIT = 2

XpmFactory = Callable[[str, AccessTokens], XpmSource]


class Notifier(Protocol):
    """The failure email (SPEC A5)."""

    def __call__(self, run: SyncRun, entries: list[Entry], config: FirmConfig) -> NotifyResult:
        """Email the admin about ``run`` if it is worth one; entries for the run's log (a
        notification user that cannot be emailed, say)."""
        ...

    def reaches_recipient(self, config: FirmConfig) -> bool:
        """Whether the notification user could be emailed now."""
        ...


@dataclass
class SyncServices:
    """Everything a run talks to; the composition root builds it from botocore and httpx, unit
    tests from in-memory fakes (``tests/fakes.py``)."""

    config: Configs
    runs: Runs
    active_for: Callable[[str], ActiveStore]
    states_for: Callable[[str], StateStore]
    matches_for: Callable[[str], MatchStore]
    tokens: FirmTokenSource
    xpm_factory: XpmFactory
    clock: Clock
    queue: Continuations | None = None
    remaining_seconds: Callable[[], float] = unlimited
    # The failure email (SPEC A5): called when a run's outcome is worth one; returns entries for
    # the run's log (a notification user that cannot be emailed, say).
    notifier: Notifier | None = None


@dataclass
class RunResult:
    run: SyncRun
    entries: list[Entry]
    # True when the run failed for a reason that may pass (XPM down, an AWS hiccup): SQS retries it.
    transient: bool = False
    # True when the run ran out of invocation time and queued its own continuation.
    continued: bool = False


@dataclass
class _RunFailure(Exception):
    kind: EntryKind
    message: str
    transient: bool = False
    reconnect: bool = False
    # XPM refused the chosen practice, not the connection: another practice chosen since stands.
    practice_refused: bool = False
    # Found refused by the API, which marked the firm needs_reconnect: the run records it as is.
    already_marked: bool = False
    # The firm was disconnected while the run went on: its status and inbox are left alone.
    disconnected: bool = False


@dataclass
class _OutOfTime(Exception):
    checkpoint: Checkpoint


@dataclass
class _Run:
    """One part of a run: what it is doing and what it found."""

    run: SyncRun
    config: FirmConfig
    resume: Checkpoint | None = None
    findings: RunFindings = field(default_factory=RunFindings)
    full_read: bool = False
    since: datetime | None = None
    # The Default Partner this run applies (None: none, or not an Active user).
    default_partner: str | None = None
    xpm_calls: int = 0
    applied: int = 0  # records applied by this part
    states: dict[str, RecordState] = field(default_factory=dict)
    store: ActiveStore | None = None
    # Run-level entries earlier parts of the run reported (their log is written already).
    earlier_run_entries: list[Entry] = field(default_factory=list)
    # The run-level conditions this run looked at (RUN_CONDITIONS): one it stopped before looking at
    # stays open as it was, rather than closing, only to open again as new at the next run.
    judged: set[str] = field(default_factory=set)
    # SQS delivers this part's message again if it fails for a reason that may pass.
    delivered_again_on_failure: bool = False
    # What the firm's XPM staff resolve to in this part (PeopleDirectory.digest).
    people_digest: str | None = None
    # The run's staff were synced, by this part or an earlier one (Checkpoint.users_synced).
    users_synced: bool = False

    def run_entries(self) -> list[Entry]:
        """Every run-level entry of the whole run so far, earlier parts' included."""
        return self.earlier_run_entries + [entry for entry in self.findings.entries if entry.entity == "run"]

    @property
    def dry_run(self) -> bool:
        return self.run.dry_run


def run_sync(
    firm_id: str,
    trigger: Trigger,
    services: SyncServices,
    *,
    resume_run_id: str | None = None,
    dry_run_id: str | None = None,
    delivered_again_on_failure: bool = False,
) -> RunResult | None:
    """Run one sync for the firm, go on with one that ran out of time (``resume_run_id``), or run
    the preview the API queued (``dry_run_id``). ``delivered_again_on_failure``: SQS will deliver
    this request again if the run fails for a reason that may pass (not its last delivery), so a
    manual run failing so is still queued, and Start Sync's gate stays shut (SPEC A6).

    None when there is nothing to do: the firm is not connected, or the continuation is stale.
    """
    config = services.config.get(firm_id)
    if config is None or not config.can_sync():
        logger.info("firm not connected; nothing to sync", extra={"firm_id": firm_id})
        if config is not None and config.run_pending and dry_run_id is None:
            services.config.update(firm_id, run_pending=False)
        if dry_run_id is not None:
            _abandon_preview(firm_id, dry_run_id, services)
        if config is not None and resume_run_id is not None:
            _end_dropped_part(config, resume_run_id, services, _CONNECTION_GONE, trigger)
        elif config is not None:
            _close_left_run(config, services)
        return None
    if resume_run_id is None and dry_run_id is None and not config.runs_when_asked(trigger):
        # Paused since this run was queued: a reconnect chose another practice than the admin's
        # (SPEC A6), which waits for the admin's Start Sync; this one would sync a practice nobody
        # chose.
        logger.info("the firm's sync is paused; the queued run is dropped", extra={"firm_id": firm_id})
        if config.run_pending:
            services.config.update(firm_id, run_pending=False)
        _close_left_run(config, services)
        return None
    part = _start(config, trigger, services, resume_run_id, dry_run_id)
    if part is None:
        return None
    part.delivered_again_on_failure = delivered_again_on_failure
    logger.append_keys(firm_id=firm_id, run_id=part.run.run_id)
    try:
        return _run(services, part)
    except Exception:
        if _holds_manual_claim(part) and not delivered_again_on_failure:
            # Its last delivery: the admin's run will not come again, so Start Sync may be pressed.
            _release_manual_claim_quietly(firm_id, services)
        raise
    finally:
        logger.remove_keys(["firm_id", "run_id"])


def _holds_manual_claim(part: _Run) -> bool:
    """Whether this run is the admin's Start Sync (whose claim ``run_pending`` is: SPEC A6)."""
    return part.run.trigger == "manual" and not part.dry_run


def _release_manual_claim_quietly(firm_id: str, services: SyncServices) -> None:
    try:
        services.config.update(firm_id, run_pending=False)
    except Exception:  # the claim goes stale by itself (domain.start_sync.PENDING_STALE_AFTER)
        logger.exception("could not release the manual run's claim", extra={"firm_id": firm_id})


def _start(
    config: FirmConfig,
    trigger: Trigger,
    services: SyncServices,
    resume_run_id: str | None,
    dry_run_id: str | None,
) -> _Run | None:
    now = services.clock.now()
    if dry_run_id is not None:
        queued = services.runs.get_run(config.firm_id, dry_run_id)
        if queued is None or not queued.dry_run or queued.status != "running":
            logger.warning("stale preview ignored", extra={"firm_id": config.firm_id, "run_id": dry_run_id})
            return None
        queued.counts = new_counts(dry_run=True)
        return _Run(run=queued, config=config)
    if resume_run_id is None and _continuing(config, now):
        # The run's next part is queued behind this request (one message group per firm): it does
        # the work this request asks for, and a new run would end it half done.
        logger.info(
            "a run of this firm is continuing; the request is left to it",
            extra={"firm_id": config.firm_id, "run_id": config.running_run_id, "trigger": trigger},
        )
        if trigger == "manual" and config.run_pending:
            # The admin's request is taken up by the run going on, which holds Start Sync's gate
            # ("a sync is running") until it ends.
            services.config.update(config.firm_id, run_pending=False)
        return None
    if resume_run_id is None:
        run = SyncRun(
            firm_id=config.firm_id,
            run_id=new_run_id(now),
            trigger=trigger,
            status="running",
            started_at=iso(now),
        )
        if config.running_run_id:
            config = _close_interrupted(config, config.running_run_id, services, closing_trigger=trigger)
        services.runs.save_run(run, now)
        services.config.update(config.firm_id, running_run_id=run.run_id, checkpoint=None)
        return _Run(run=run, config=config)
    checkpoint = config.checkpoint
    unfinished = services.runs.get_run(config.firm_id, resume_run_id)
    if (
        checkpoint is None
        or checkpoint.run_id != resume_run_id
        or unfinished is None
        or unfinished.status != "running"
    ):
        logger.warning(
            "stale continuation ignored", extra={"firm_id": config.firm_id, "run_id": resume_run_id}
        )
        if checkpoint is None or checkpoint.run_id == resume_run_id:
            # The checkpoint went with a reconnect or a tenant change (SPEC A6): the run cannot go
            # on against another practice, so it ends here.
            _end_dropped_part(config, resume_run_id, services, _SETUP_CHANGED, trigger)
        return None
    part = _Run(run=unfinished, config=config, resume=checkpoint, users_synced=checkpoint.users_synced)
    part.earlier_run_entries = list(checkpoint.run_entries)
    if "run_entries" in checkpoint.model_fields_set and checkpoint.users_synced:
        part.judged.update(RUN_CONDITIONS)  # the first part looked, and carried what it found
    # else a checkpoint an earlier version wrote, carrying nothing: those problems stay as they were
    return part


def _continuing(config: FirmConfig, now: datetime) -> bool:
    """A run stopped at a checkpoint and queued its next part, recently enough for that part to come.

    Past the queue's visibility timeout (and a margin) the part is taken as lost: the next request
    closes the run as interrupted and starts afresh.
    """
    checkpoint = config.checkpoint
    if checkpoint is None or checkpoint.saved_at is None or checkpoint.run_id != config.running_run_id:
        return False
    return now - parse_iso(checkpoint.saved_at) < CONTINUATION_LOST_AFTER


def _close_interrupted(
    config: FirmConfig, run_id: str, services: SyncServices, *, closing_trigger: Trigger
) -> FirmConfig:
    """Mark failed a run whose worker was stopped (timeout, out of memory) before it could end,
    and end it as any failed run ends (SPEC A5, B6): its run-level problem recorded, counted among
    the self-clearing failures in a row, the admin emailed once they persist. Returns the config
    as the run starting now must see it. An admin's run closed by a run of another trigger releases
    Start Sync's claim: its message is gone (one delivered again would be the run starting now).

    Nothing it did is lost: records it wrote are matched by XPM UUID, and since it never
    completed, the next incremental read starts from before it began.
    """
    why = _worker_stopped()
    closed = _end_unfinished(config.firm_id, run_id, services, why)
    if closed is None:
        return config
    logger.warning(
        "closed a run whose worker was stopped", extra={"firm_id": config.firm_id, "run_id": run_id}
    )
    _record_run_level_problems(config, closed, services, why)
    if closed.trigger == "manual" and closing_trigger != "manual" and config.run_pending:
        services.config.update(config.firm_id, run_pending=False)
        config = config.model_copy(update={"run_pending": False})
    now = services.clock.now()
    failures_in_a_row = config.transient_failures_in_a_row + 1
    failing_since = _failing_since(config, closed, failures_in_a_row)
    bookkeeping: dict[str, Any] = {
        "transient_failures_in_a_row": failures_in_a_row,
        "transient_failures_since": failing_since,
        "last_failure_owner": failed_run_fault(closed.status, [why.code]),
    }
    if not services.config.update_if_same_state(config.firm_id, config.sync_state_id, **bookkeeping):
        return config
    config = config.model_copy(update=bookkeeping)
    told = _notify_if_due(services, closed, config, why.code, failures_in_a_row, failing_since, [why], now)
    if told.entries:
        _write_entries(services, closed, list(told.entries), now)
        services.runs.save_run(closed, now)
    if told.asked:
        _record_run_level_problems(config, closed, services, why, *told.entries, notify_judged=True)
    if told.sent_at is not None:
        config = config.model_copy(update={"last_notified_at": told.sent_at})
    return config


def _close_left_run(config: FirmConfig, services: SyncServices) -> None:
    """A run whose worker was stopped is closed by the firm's next run; a firm that runs no more
    (disconnected, or paused) closes it here, or Start Sync would answer "a sync is running" for
    hours after a reconnect (the probe of 2026-12-07 (night)). A run still continuing is left be."""
    if config.running_run_id is None or _continuing(config, services.clock.now()):
        return
    ended = _end_unfinished(
        config.firm_id, config.running_run_id, services, _worker_stopped(next_run_carried_on=False)
    )
    if ended is not None:
        logger.warning(
            "closed a run whose worker was stopped", extra={"firm_id": config.firm_id, "run_id": ended.run_id}
        )
    services.config.update(config.firm_id, running_run_id=None, checkpoint=None)


def _worker_stopped(*, next_run_carried_on: bool = True) -> Entry:
    carried_on = "; the next run carried on" if next_run_carried_on else ""
    return codes.INTERNAL_ERROR.entry(
        label="Sync run", message=f"This run stopped before it finished (its worker was stopped){carried_on}."
    )


def _abandon_preview(firm_id: str, run_id: str, services: SyncServices) -> None:
    """A preview queued for a firm that disconnected since: it ends failed, saying why."""
    services.config.update(firm_id, preview_pending=False)
    _end_unfinished(
        firm_id,
        run_id,
        services,
        codes.XPM_NEEDS_RECONNECT.entry(
            label="Sync run", message="The integration is not connected any more; the preview did not run."
        ),
    )


# Run-level problems that are conditions a run checks on its way (not why it stopped): a run that
# stopped before checking one has not seen it cleared.
RUN_CONDITIONS = frozenset({codes.CONNECTION_OWNER_NOT_IN_XPM.code, codes.DEFAULT_PARTNER_NOT_IN_ACTIVE.code})
# Looked at only when a run has to email the admin: a run that did not keeps it as it was.
_NOTIFY_CONDITION = codes.NOTIFICATION_USER_INVALID.code

# Why a run whose next part cannot go on ended (_end_dropped_part).
_SETUP_CHANGED = codes.SYNC_SETUP_CHANGED.entry(
    label="Sync run",
    message="The XPM connection or practice changed between two parts of this run: it stopped there, "
    "and the next run reads every client of the practice now chosen.",
)
_NEXT_PART_NOT_QUEUED = codes.INTERNAL_ERROR.entry(
    label="Sync run",
    message="This run ran out of time and its next part could not be queued: it stopped there.",
)
_CONNECTION_GONE = codes.XPM_NEEDS_RECONNECT.entry(
    label="Sync run",
    message="The integration was disconnected, or Xero stopped accepting its connection, between two "
    "parts of this run: it stopped there.",
)


def _end_dropped_part(
    config: FirmConfig,
    run_id: str,
    services: SyncServices,
    why: Entry,
    trigger: Trigger,
    *,
    keeps_claim: bool = False,
) -> SyncRun | None:
    """A run's next part that cannot go on ends the run: left running, it would hold Start Sync
    ("a sync is running") for hours, and show a run going on that nothing will finish. Returns the
    run so ended (None when it had ended already). ``trigger`` is the run's; ``keeps_claim``: the
    admin's request will be delivered again, so Start Sync's gate stays shut."""
    ended = _end_unfinished(config.firm_id, run_id, services, why)
    if ended is not None:
        logger.warning(
            "a run's next part could not go on; the run is ended",
            extra={"firm_id": config.firm_id, "run_id": run_id, "code": why.code},
        )
        _record_run_level_problems(config, ended, services, why)
    # Even when the run had ended (its end recorded, and then the config's update failed), what
    # still names it would hold Start Sync and the hourly runs.
    cleared: dict[str, Any] = {}
    if config.running_run_id == run_id:
        cleared["running_run_id"] = None
        if trigger == "manual" and not keeps_claim:
            # As at a run's end (_record_end): the admin's run is over. A manual run queued behind
            # a scheduled one keeps the gate shut (SPEC A6), and so does a newer Start Sync's run
            # queued behind a part delivered again after its run ended (that part ends nothing).
            cleared["run_pending"] = False
    if config.checkpoint is not None and config.checkpoint.run_id == run_id:
        cleared["checkpoint"] = None
    if cleared:
        services.config.update(config.firm_id, **cleared)
    return ended


def _record_run_level_problems(
    config: FirmConfig,
    ended: SyncRun,
    services: SyncServices,
    why: Entry,
    *more: Entry,
    notify_judged: bool = False,
) -> None:
    """SPEC B6: a run-level problem is the latest run's. A run ended without its next part (or
    stopped by the runtime) reports what its earlier parts found (the checkpoint carries it), why
    it ended, and ``more``: what telling the admin found, when it was told (``notify_judged``). The
    checks it could not finish keep their problems as they were."""
    checkpoint = config.checkpoint
    carried = checkpoint.run_entries if checkpoint is not None and checkpoint.run_id == ended.run_id else []
    states = services.states_for(config.firm_id)
    prior = states.get(RUN_KEY)
    now = services.clock.now()
    state, closed = reconcile(
        prior,
        run_level_sighting([*carried, why, *more]),
        run_id=ended.run_id,
        run_started_at=ended.started_at,
        now=iso_precise(now),
        unjudged=RUN_CONDITIONS | (set() if notify_judged else {_NOTIFY_CONDITION}),
    )
    states.write(
        [state] if state is not None else [], [RUN_KEY] if state is None and prior else [], closed, now
    )


def _end_unfinished(firm_id: str, run_id: str, services: SyncServices, why: Entry) -> SyncRun | None:
    """End as failed a run still marked running, with the entry saying why; the run so ended, or
    None if it had ended."""
    unfinished = services.runs.get_run(firm_id, run_id)
    if unfinished is None or unfinished.status != "running":
        return None
    now = services.clock.now()
    if now - parse_iso(unfinished.started_at) >= RUN_RETENTION:
        # Past its TTL (a firm away for months since): DynamoDB may delete it any moment. Ending
        # it now would keep it 90 days more and report a failure months old as the firm's news.
        return None
    unfinished.status = "failed"
    unfinished.finished_at = iso(now)
    _write_entries(services, unfinished, [why], now)
    services.runs.save_run(unfinished, now)
    return unfinished


def tell_lost_connection(firm_id: str, services: SyncServices) -> str:
    """Email the admin that the firm's connection was lost, when the run that lost it could not
    (that day's email already sent, or SES failing): the firm runs no more, so the hourly schedule
    asks again until it goes (SPEC A8), within the 24-hour allowance (SPEC A5). What it says is what
    is open now, the lost connection first; a firm connected (or disconnected) since owes nothing."""
    config = services.config.get(firm_id)
    if config is None or config.reconnect_notice_run_id is None:
        return "not_owed"
    run = services.runs.get_run(firm_id, config.reconnect_notice_run_id)
    open_now = services.states_for(firm_id).get(RUN_KEY)
    lost = open_now is not None and bool(open_now.codes & _CONNECTION_LOST_CODES)
    if (
        config.connection != "needs_reconnect"
        or services.notifier is None
        or run is None
        or open_now is None
        or not lost
    ):
        # Connected or disconnected since, or the loss the run recorded no longer open: the email
        # would tell of a run that is not the firm's news.
        services.config.update(firm_id, reconnect_notice_run_id=None)
        return "not_owed"
    causes = [
        Entry(
            severity=problem.severity,
            entity="run",
            label=open_now.label,
            code=problem.code,
            message=problem.message,
            suggestion=problem.suggestion,
        )
        for problem in open_now.problems
    ]
    result = services.notifier(run, causes, config)
    if result.outcome in _NOT_GONE:
        return result.outcome  # the next hour asks again
    update: dict[str, Any] = {"reconnect_notice_run_id": None}
    if result.outcome == "sent":
        update["last_notified_at"] = iso_precise(services.clock.now())
    services.config.update(firm_id, **update)
    return result.outcome


def record_connection_lost(
    firm_id: str, trigger: Trigger, services: SyncServices, message: str, *, grant_id: str | None
) -> RunResult | None:
    """A connection Xero no longer accepts, found outside a run (an idle connection's keep-alive
    refresh refused): recorded as a failed run with its run-level entry, the firm marked
    ``needs_reconnect`` and its admin emailed, as a run finding it would (SPEC A8). ``grant_id``
    names the grant refused: one the admin has replaced since is nothing to record."""
    config = services.config.get(firm_id)
    if config is None or not config.can_sync() or config.grant_id != grant_id:
        return None
    return _record_lost(
        config, trigger, services, _RunFailure(codes.XPM_NEEDS_RECONNECT, message, reconnect=True)
    )


def record_connection_found_lost(
    firm_id: str, services: SyncServices, *, grant_id: str | None
) -> RunResult | None:
    """A grant the API found refused (the setup page's practices, or a save) and marked
    ``needs_reconnect``: recorded as a run finding it would, with its run-level entry, and the
    admin told (SPEC A8). A firm connected again, or disconnected, since is nothing to record."""
    config = services.config.get(firm_id)
    if config is None or config.connection != "needs_reconnect" or config.grant_id != grant_id:
        return None
    failure = _RunFailure(
        codes.XPM_NEEDS_RECONNECT,
        "Xero refused this firm's connection when the integration's settings were opened or saved.",
        reconnect=True,
        already_marked=True,
    )
    return _record_lost(config, "manual", services, failure)


def _record_lost(
    config: FirmConfig, trigger: Trigger, services: SyncServices, failure: _RunFailure
) -> RunResult:
    # This record's end clears the run the config names: one a killed worker left is closed first.
    _close_left_run(config, services)
    now = services.clock.now()
    run = SyncRun(
        firm_id=config.firm_id, run_id=new_run_id(now), trigger=trigger, status="running", started_at=iso(now)
    )
    part = _Run(run=run, config=config)
    part.states = services.states_for(config.firm_id).load(with_copies=False)
    part.findings.had_state = set(part.states)
    return _finish(services, part, failure, 0.0)


# --- The run ------------------------------------------------------------------------------------


def _run(services: SyncServices, part: _Run) -> RunResult:
    failure: _RunFailure | None = None
    clock_start = time.monotonic()
    try:
        _sync(services, part)
    except _OutOfTime as out_of_time:
        try:
            return _suspend(services, part, out_of_time.checkpoint)
        except _RunFailure as caught:
            failure = caught
    except _RunFailure as caught:
        failure = caught
    except FirmDisconnected:
        failure = _RunFailure(
            codes.XPM_NEEDS_RECONNECT,
            "The integration was disconnected while this run went on; it stays disconnected.",
            disconnected=True,
        )
    except NeedsReconnect:
        failure = _RunFailure(
            codes.XPM_NEEDS_RECONNECT, "Xero no longer accepts this firm's connection.", reconnect=True
        )
    except XpmError as error:
        failure = _xpm_failure(error)
    except XeroIdentityError as error:
        failure = _identity_failure(error)
    except Exception as error:
        logger.exception("sync run stopped on an unexpected error")
        failure = _RunFailure(
            codes.INTERNAL_ERROR, f"The sync stopped: {type(error).__name__}.", transient=True
        )
    return _finish(services, part, failure, time.monotonic() - clock_start)


def _sync(services: SyncServices, part: _Run) -> None:
    config = part.config
    _choose_read(services, part)
    if not part.dry_run:
        # The copies failed records are retried from: an incremental run needs them.
        part.states = services.states_for(config.firm_id).load(with_copies=not part.full_read)
        part.findings.had_state = set(part.states)
    if not config.tenant_id or not config.default_office_code:
        _keep_connection_alive(services, part)
        raise _RunFailure(codes.SYNC_NOT_CONFIGURED, "No XPM practice or default office is chosen yet.")
    store = services.active_for(config.firm_id)
    part.store = store
    office = store.offices().get(config.default_office_code)
    if office is None:
        _keep_connection_alive(services, part)
        raise _RunFailure(
            codes.DEFAULT_OFFICE_MISSING,
            f"The default office {config.default_office_code} does not exist in Active.",
        )
    default_partner = office.default_partner_user_id or None
    part.judged.add(codes.DEFAULT_PARTNER_NOT_IN_ACTIVE.code)
    if default_partner is not None and not store.user_exists(default_partner):
        earlier = {entry.code for entry in part.earlier_run_entries}
        # Reported once per run: by the first part, or by a later one when no earlier part did (an
        # earlier version's checkpoint carries no entries: its first part reported it if it was so).
        carried = part.resume is None or "run_entries" in part.resume.model_fields_set
        if carried and codes.DEFAULT_PARTNER_NOT_IN_ACTIVE.code not in earlier:
            part.findings.run_level(
                codes.DEFAULT_PARTNER_NOT_IN_ACTIVE.entry(
                    label="Default Partner",
                    message=f"The default office {office.code}'s Default Partner (user {default_partner}) "
                    "is not an Active user; clients without a Partner in XPM cannot be synced.",
                )
            )
        default_partner = None
    part.default_partner = default_partner
    if not part.full_read and part.resume is None and inputs_changed(config, default_partner):
        # The clients with no Partner in XPM are in no incremental answer: only a full read moves
        # them to the new Default Partner (SPEC A2), this run, not at the next daily one.
        logger.info(
            "the Default Partner changed: this run reads every client", extra={"firm_id": config.firm_id}
        )
        part.full_read, part.since = True, None
    if part.full_read and part.resume is None and not part.dry_run and not config.full_read_owed:
        applied = _applied_inputs(part)
        if config.full_read_inputs is not None and applied != config.full_read_inputs:
            # Until this read completes, some clients may carry these inputs and others not: the
            # next run reads every client, even if the inputs go back to the recorded ones.
            services.config.update(config.firm_id, full_read_owed=True)
    xpm = services.xpm_factory(config.tenant_id, services.tokens.for_firm(config.firm_id))
    try:
        _sync_with(xpm, services, part, store, office.code, default_partner)
    finally:
        part.xpm_calls += xpm.calls
        xpm.close()
        store.flush()  # whatever happened, the records this part created are written


def _keep_connection_alive(services: SyncServices, part: _Run) -> None:
    """SPEC A6: a connection never expires unused. A run that stops before it reaches XPM (setup to
    finish, a default office deleted) uses no token, and the schedule keeps alive only firms that
    do not sync hourly: once the tokens are 30 days old, such a run refreshes them itself. A refresh
    Xero refuses is the run's failure (the firm must reconnect); one Xero cannot answer now waits for
    the next hour."""
    if part.dry_run:
        return
    refreshed = last_refresh(part.config)
    if refreshed is None or services.clock.now() - refreshed < KEEP_ALIVE_AFTER:
        return
    try:
        services.tokens.for_firm(part.config.firm_id).access_token(force_refresh=True)
    except (NeedsReconnect, FirmDisconnected):
        raise
    except Exception as error:  # the run's own failure stands; the next hour tries again
        logger.warning(
            "could not refresh the tokens of a run that stopped before XPM",
            extra={"firm_id": part.config.firm_id, "error": type(error).__name__},
        )


def _choose_read(services: SyncServices, part: _Run) -> None:
    resume = part.resume
    if resume is not None:
        part.full_read = resume.full_read
        part.since = parse_iso(resume.since) if resume.since else None
    elif part.dry_run or full_read_due(part.config, services.clock.now()):
        part.full_read = True  # a preview reads as a first sync does (SPEC B6)
    else:
        assert part.config.last_completed_run_started_at is not None  # full_read_due() otherwise
        part.since = parse_iso(part.config.last_completed_run_started_at) - MODIFIED_SINCE_MARGIN


def _sync_with(
    xpm: XpmSource,
    services: SyncServices,
    part: _Run,
    store: ActiveStore,
    office_code: str,
    default_partner: str | None,
) -> None:
    counts = part.run.counts
    # A continuation reads staff again to resolve partners, but the part that synced them counted
    # and reported them (one that stopped reading the staff list did not: this part does).
    resuming = part.users_synced
    user_counts = counts["user"] if not resuming else dict.fromkeys(counts["user"], 0)
    users = UserSync(
        store, user_counts, part.findings if not resuming else RunFindings(), dry_run=part.dry_run
    )
    try:
        staff = xpm.list_staff()
    except XpmTooSlow:
        raise _OutOfTime(_place_kept(part)) from None
    directory = users.sync(staff)
    directory.default_partner_user_id = default_partner
    part.people_digest = directory.digest()
    if not resuming:
        _check_connection_owner(part, directory.has_staff_email)
    part.users_synced = True
    matches = services.matches_for(part.config.firm_id)
    clients = ClientSync(
        store=store,
        people=directory,
        default_office_code=office_code,
        counts=counts["client"],
        findings=part.findings,
        matches=matches,
        suggestions=matches.load(),
        dry_run=part.dry_run,
        # Clients an earlier part of this run sent live and that failed: no archived client for
        # a new one to take back (the ledger of that part is gone; its record states are not).
        failed_earlier_in_run={
            state.xpm_uuid
            for state in part.states.values()
            if state.entity == "client" and state.xpm_uuid and state.seen_run == part.run.run_id
        },
    )
    if part.full_read:
        unlinked_before = matches.unlinked() if not part.dry_run else []
        unlinked_now = clients.load_all()
        if not part.dry_run:
            matches.replace_unlinked(unlinked_now, unlinked_before)
    else:
        clients.unlinked = UnlinkedClients(matches.unlinked())
    try:
        if part.resume is None or part.resume.phase == "list":
            _stream_clients(xpm, services, part, clients)
        if not part.full_read:
            # Before the list's waiters settle: a client of the list may be waiting for the code of
            # one only a retry applies (codes swapped while one of the two was failing).
            _retry_clients(services, part, clients)
        clients.settle(whole_list=part.full_read and part.resume is None)
    except _OutOfTime as stopped:
        # A client waiting for a code cannot wait across invocations: it fails for now and is
        # retried next run, by when its code's holder has moved. A part stopping in the retries
        # has read the whole list: no holder is still to come.
        clients.settle(stopping=stopped.checkpoint.phase == "list")
        _end_of_part(part, clients, matches)
        raise
    _end_of_part(part, clients, matches)


def _end_of_part(part: _Run, clients: ClientSync, matches: MatchStore) -> None:
    """What this part settled leaves the stored lists: clients it linked, suggestions answered."""
    _drop_linked_from_unlinked(part, clients, matches)
    if clients.settled_suggestions and not part.dry_run:
        matches.forget(clients.settled_suggestions)
    if not part.dry_run and (unlisted := clients.suggestions_not_listed()):
        # One a preview made has no record state for the full read to drop it with (SPEC B6).
        matches.forget(unlisted)


def _drop_linked_from_unlinked(part: _Run, clients: ClientSync, matches: MatchStore) -> None:
    """The stored unlinked clients (the full read's) lose those this part linked or found linked."""
    if clients.no_longer_unlinked and not part.dry_run:
        matches.drop_unlinked(clients.no_longer_unlinked)
        clients.no_longer_unlinked.clear()


def _check_connection_owner(part: _Run, in_staff_list: Callable[[str], bool]) -> None:
    """SPEC A6: the connection belongs to the Xero user who allowed access; when they are no longer
    in XPM's staff list, the connection will break."""
    part.judged.add(codes.CONNECTION_OWNER_NOT_IN_XPM.code)
    owner = part.config.connected_by_email
    if owner and not in_staff_list(owner):
        part.findings.run_level(
            codes.CONNECTION_OWNER_NOT_IN_XPM.entry(
                label="Connection",
                message=f"{owner} connected XPM for this firm but is not in XPM's staff list: the "
                "connection stops working when Xero removes their access.",
            )
        )


def _chunks(records: Iterator[XpmClientRecord], size: int) -> Iterator[list[XpmClientRecord]]:
    while chunk := list(islice(records, size)):
        yield chunk


def _stream_clients(xpm: XpmSource, services: SyncServices, part: _Run, clients: ClientSync) -> None:
    """Apply the client list record by record; stop with a checkpoint when time runs short.

    A continuation skips the records the earlier part applied, trusting XPM's order only when the
    last record it applied is where it should be; otherwise it applies them all again, which is
    safe because unchanged records are not written and matching is by XPM UUID.
    """
    resume = part.resume
    skip = resume.processed if resume is not None and resume.phase == "list" else 0
    if skip and not _apply_list(xpm, services, part, clients, skip):
        logger.warning("XPM's client order changed since the checkpoint; applying every record again")
        skip = 0
    if not skip:
        _apply_list(xpm, services, part, clients, 0)


def _apply_list(xpm: XpmSource, services: SyncServices, part: _Run, clients: ClientSync, skip: int) -> bool:
    """One pass over the list; False when the record before ``skip`` is not the checkpoint's.

    Records are applied a batch at a time, so that an incremental run looks a batch up in Active
    at once (``ClientSync.prepare``)."""
    done = 0  # records of the list applied (or skipped as applied by an earlier part)
    last_uuid: str | None = None
    batch: list[XpmClientRecord] = []

    def apply_batch(margin: float = CHECKPOINT_MARGIN_SECONDS) -> None:
        nonlocal done, last_uuid
        clients.prepare(batch)
        for record in batch:
            # Each invocation applies at least one record, so a run always makes progress.
            if part.applied and services.remaining_seconds() < margin:
                raise _OutOfTime(_checkpoint(part, phase="list", processed=done, last_uuid=last_uuid))
            clients.apply(record)
            part.applied += 1
            done += 1
            last_uuid = record.uuid
        batch.clear()
        clients.drain()

    try:
        for record in xpm.iter_clients(modified_since=part.since):
            if done < skip:
                done += 1
                last_uuid = record.uuid
                if done == skip and part.resume is not None and record.uuid != part.resume.last_uuid:
                    return False
                continue
            batch.append(record)
            if len(batch) >= LOOKUP_BATCH:
                apply_batch()
        apply_batch()
    except XpmTooSlow:
        # What arrived before the reading deadline is applied: the part's progress. The reader
        # stops with more time left than the records already in hand need (READ_DEADLINE_MARGIN),
        # so only the last moments are kept for the checkpoint.
        apply_batch(margin=FINISHING_MARGIN_SECONDS)
        if done < skip:
            # Still reading up to where the run had got: its place stands. Saving this part's
            # position would send the next part back over records already applied, as progress.
            raise _OutOfTime(_place_kept(part)) from None
        raise _OutOfTime(_checkpoint(part, phase="list", processed=done, last_uuid=last_uuid)) from None
    return True


def _retry_clients(services: SyncServices, part: _Run, clients: ClientSync) -> None:
    """Apply again, from the copy XPM last sent, each client that failed in an earlier run and was
    not in this run's answer (SPEC A7): no XPM call; Active read by key.

    A client that lost its code to another XPM client goes after the rest: the first (by XPM's
    order) keeps a shared code (SPEC A4), and it may be waiting for a retry itself (its partner
    missing, say), so it must not find the code taken by the one that lost it.

    A client that synced with its Manager left empty (RESOLVED_BY_PEOPLE) is applied again only
    when what the staff resolve to changed since the last completed run: a user added in Active
    then sets the Manager at the next run, and a firm with thousands of such clients reads none of
    them in an hour when nobody changed."""
    people_changed = part.people_digest != part.config.people_digest
    due = [
        state
        for _, key, state in sorted(
            (codes.CLIENT_CODE_DUPLICATE.code in state.codes, key, state)
            for key, state in part.states.items()
        )
        if state.retry_copy is not None
        and (people_changed or not waits_on_people(state))
        and state.seen_run != part.run.run_id
        and key not in part.findings.sightings
        # XPM's answer sent it (it may still be waiting for a code): its copy there is newer.
        and state.xpm_uuid not in clients.applied_from_list
    ]
    for batch in (due[start : start + LOOKUP_BATCH] for start in range(0, len(due), LOOKUP_BATCH)):
        records = [XpmClientRecord.model_validate_json(state.retry_copy or "") for state in batch]
        clients.prepare(records)
        for record in records:
            if part.applied and services.remaining_seconds() < CHECKPOINT_MARGIN_SECONDS:
                raise _OutOfTime(_checkpoint(part, phase="retries"))
            clients.apply(record, from_retry=True)
            part.applied += 1
        clients.drain()


def _applied_inputs(part: _Run) -> dict[str, str]:
    """What the run applied from Active that XPM's answer does not say: as its first part did."""
    if part.resume is not None and part.resume.applied_inputs is not None:
        return part.resume.applied_inputs
    return {"default_partner_user_id": part.default_partner} if part.default_partner else {}


def _checkpoint(part: _Run, *, phase: str, processed: int = 0, last_uuid: str | None = None) -> Checkpoint:
    earlier = part.resume.parts_without_progress if part.resume is not None else 0
    return Checkpoint(
        applied_inputs=_applied_inputs(part),
        users_synced=part.users_synced,
        run_id=part.run.run_id,
        full_read=part.full_read,
        since=iso(part.since) if part.since else None,
        phase="retries" if phase == "retries" else "list",
        processed=processed,
        last_uuid=last_uuid,
        parts_without_progress=0 if part.applied else earlier + 1,
    )


def _place_kept(part: _Run) -> Checkpoint:
    """The checkpoint of a part that ran out of time before it got past where the run had got:
    the run's place unchanged (a part with nothing applied counts towards XPM_TOO_SLOW)."""
    resume = part.resume
    if resume is None:
        return _checkpoint(part, phase="list")
    return _checkpoint(part, phase=resume.phase, processed=resume.processed, last_uuid=resume.last_uuid)


def _suspend(services: SyncServices, part: _Run, checkpoint: Checkpoint) -> RunResult:
    """Save what this part did and queue the next part: the run stays ``running`` until it ends."""
    if checkpoint.parts_without_progress >= PARTS_WITHOUT_PROGRESS_LIMIT or part.dry_run:
        raise _RunFailure(
            codes.XPM_TOO_SLOW,
            "XPM's answer arrived too slowly: no record could be applied before the time ran out."
            if not part.dry_run
            else "The preview could not be completed within one invocation.",
        )
    if services.queue is None:
        raise RuntimeError("a run that must continue needs the sync queue")
    if part.store is not None:
        part.store.flush()
    run = part.run
    now = services.clock.now()
    _save_states(services, part, now, complete=False)
    run.xpm_calls += part.xpm_calls
    run.full_read = part.full_read
    _write_entries(services, run, part.findings.entries, now)
    services.runs.save_run(run, now)
    saved = checkpoint.model_copy(update={"saved_at": iso(now), "run_entries": part.run_entries()})
    if not services.config.update_if_same_state(
        part.config.firm_id, part.config.sync_state_id, checkpoint=saved.model_dump()
    ):
        # Another practice was chosen (or the firm reconnected) while this part went on: its
        # checkpoint would carry the old practice's place and read window into the new one.
        current = services.config.get(part.config.firm_id) or part.config
        ended = _end_dropped_part(current, run.run_id, services, _SETUP_CHANGED, run.trigger)
        return RunResult(run=ended or run, entries=part.findings.entries)
    try:
        services.queue.enqueue_continuation(part.config.firm_id, run.trigger, run.run_id)
    except Exception:
        if part.resume is None or not part.delivered_again_on_failure:
            # The request SQS delivers again would find the run continuing and leave the work to a
            # part nobody queued, holding Start Sync and the hourly runs for CONTINUATION_LOST_AFTER:
            # the run ends here, and that delivery starts it afresh (the admin's claim stays while
            # one is to come). A later part's delivery finds its checkpoint and carries on, unless
            # this was its last delivery: then nothing will, and the run ends here too.
            current = services.config.get(part.config.firm_id) or part.config
            _end_dropped_part(
                current,
                run.run_id,
                services,
                _NEXT_PART_NOT_QUEUED,
                run.trigger,
                keeps_claim=part.delivered_again_on_failure,
            )
        raise
    logger.info(
        "sync run continues in a new invocation",
        extra={
            "firm_id": run.firm_id,
            "run_id": run.run_id,
            "processed": checkpoint.processed,
            "phase": checkpoint.phase,
        },
    )
    return RunResult(run=run, entries=part.findings.entries, continued=True)


def _save_states(services: SyncServices, part: _Run, now: datetime, *, complete: bool) -> None:
    """Write what this part found to the record states (SPEC B6): sightings reconciled with what
    was open. A complete run also closes what it no longer sees: staff not in the staff list (read
    whole every run) and, after a full read, clients XPM no longer lists."""
    run = part.run
    puts: list[RecordState] = []
    deletes: list[str] = []
    fixed = []
    now_text = iso_precise(now)
    for key, sighting in part.findings.sightings.items():
        state, closed = reconcile(
            part.states.get(key),
            sighting,
            run_id=run.run_id,
            run_started_at=run.started_at,
            now=now_text,
            unjudged=(RUN_CONDITIONS | {_NOTIFY_CONDITION}) - part.judged if key == RUN_KEY else (),
        )
        fixed.extend(closed)
        if state is not None:
            puts.append(state)
            part.states[key] = state
        elif key in part.states:
            deletes.append(key)
            del part.states[key]
    unlisted_clients: list[str] = []
    if complete:
        for key, state in list(part.states.items()):
            gone = state.entity == "user" or (state.entity == "client" and part.full_read)
            if key == RUN_KEY or state.seen_run == run.run_id or key in part.findings.sightings or not gone:
                continue
            _, closed = reconcile(state, None, run_id=run.run_id, run_started_at=run.started_at, now=now_text)
            fixed.extend(closed)
            deletes.append(key)
            del part.states[key]
            if state.entity == "client" and state.xpm_uuid:
                unlisted_clients.append(state.xpm_uuid)
    part.findings.sightings.clear()
    part.findings.had_state = set(part.states)
    services.states_for(run.firm_id).write(puts, deletes, fixed, now)
    if unlisted_clients:
        # A record XPM no longer lists waits for no answer: its suggested link goes with its state.
        services.matches_for(run.firm_id).forget(unlisted_clients)


def _failing_since(config: FirmConfig, run: SyncRun, failures_in_a_row: int) -> str | None:
    """When the streak of self-clearing failures this run belongs to began (None: not failing)."""
    if failures_in_a_row == 0:
        return None
    return (config.transient_failures_since if failures_in_a_row > 1 else None) or run.started_at


def _failures_in_a_row(config: FirmConfig, failure: _RunFailure | None) -> int:
    """Self-clearing failures in a row, this run's included (SPEC A5: the third is emailed)."""
    if failure is None or failure.kind.code not in SELF_CLEARING_FAILURES:
        return 0
    return config.transient_failures_in_a_row + 1


# --- Failures ------------------------------------------------------------------------------------


def _xpm_failure(error: XpmError) -> _RunFailure:
    if isinstance(error, XpmAuthError):
        return _RunFailure(codes.XPM_NEEDS_RECONNECT, "XPM refused the firm's connection.", reconnect=True)
    if isinstance(error, XpmWrongTenant):
        # Not something a later run can get past: only a reconnect choosing the practice again can.
        return _RunFailure(
            codes.XPM_WRONG_TENANT,
            "XPM refused access to the chosen practice.",
            reconnect=True,
            practice_refused=True,
        )
    if isinstance(error, XpmRateLimited):
        limit = f" ({error.problem} limit)" if error.problem else ""
        return _RunFailure(codes.XPM_RATE_LIMITED, f"XPM's rate limit was reached{limit}.")
    if isinstance(error, XpmTooSlow):
        return _RunFailure(codes.XPM_TOO_SLOW, f"XPM answered too slowly: {error}")
    if isinstance(error, XpmUnavailable):
        return _RunFailure(codes.XPM_UNAVAILABLE, f"XPM is unavailable: {error}", transient=True)
    if isinstance(error, XpmBadResponse):
        return _RunFailure(codes.XPM_BAD_RESPONSE, f"XPM's answer could not be used: {error}")
    return _RunFailure(codes.XPM_UNAVAILABLE, f"XPM call failed: {error}", transient=True)


def _identity_failure(error: XeroIdentityError) -> _RunFailure:
    """Xero's identity service failed while the run renewed the firm's access token."""
    if isinstance(error, InvalidGrant):
        # The token store turns a refused refresh token into NeedsReconnect; this is a safety net.
        return _RunFailure(
            codes.XPM_NEEDS_RECONNECT, "Xero no longer accepts this firm's connection.", reconnect=True
        )
    if isinstance(error, AppCredentialsUnavailable):
        # The secret's name and the AWS error are the operator's, in this log line; the entry an
        # admin reads says what failed, not where the deployment keeps its secrets.
        logger.error("the app's credentials secret could not be used", extra={"error": str(error)})
        return _RunFailure(
            codes.XERO_APP_CREDENTIALS_INVALID,
            "This integration's app credentials could not be read while renewing access.",
        )
    if isinstance(error, InvalidClient):
        # The app's own client id and secret: every firm is affected and only an operator can fix it,
        # so SQS retrying the record would only fail again.
        logger.error("Xero refused the app's client credentials", extra={"error": str(error)})
        return _RunFailure(
            codes.XERO_APP_CREDENTIALS_INVALID,
            f"Xero refused this integration's app credentials while renewing access: {error}",
        )
    return _RunFailure(
        codes.XPM_UNAVAILABLE, f"Xero's sign-in service is unavailable: {error}", transient=True
    )


# --- The end of a run ----------------------------------------------------------------------------


def _status(run: SyncRun, run_entries: list[Entry], failure: _RunFailure | None) -> str:
    if failure is not None:
        return "failed"
    record_failed = any(counts.get("failed") for counts in run.counts.values())
    run_error = any(entry.severity == "error" for entry in run_entries)
    return "partial" if record_failed or run_error else "success"


def _finish(services: SyncServices, part: _Run, failure: _RunFailure | None, seconds: float) -> RunResult:
    run, config, findings = part.run, part.config, part.findings
    finished = services.clock.now()
    # Set before anything else is written, so that a firm disconnected (or connected again) while
    # this run went on is neither marked for reconnecting nor emailed about it.
    disconnected = failure is not None and (
        failure.disconnected
        or (
            failure.reconnect
            and not part.dry_run
            and not failure.already_marked
            and not services.config.mark_needs_reconnect(
                config.firm_id,
                grant_id=config.grant_id,
                practice_of=config if failure.practice_refused else None,
            )
        )
    )
    if failure is not None:
        message = failure.message
        if disconnected and not failure.disconnected:
            now_config = services.config.get(config.firm_id)
            if (
                now_config is not None
                and now_config.connection == "connected"
                and failure.practice_refused
                and now_config.sync_state_id != config.sync_state_id
            ):
                logger.info("another practice chosen during the run", extra={"firm_id": config.firm_id})
                message += (
                    " Another practice was chosen while this run went on: the refusal was the old"
                    " practice's, and the next run reads the new one."
                )
            elif (
                now_config is not None
                and now_config.connection == "needs_reconnect"
                and now_config.grant_id == config.grant_id
            ):
                # Marked meanwhile by the API, which met the same refusal and records it (with the
                # admin's email): the message needs nothing added, and no second email goes.
                logger.info("connection already found lost during the run", extra={"firm_id": config.firm_id})
            elif now_config is not None and now_config.connection == "connected":
                logger.info("firm connected again during the run", extra={"firm_id": config.firm_id})
                message += (
                    " The integration was connected to Xero again while this run went on: the new "
                    "connection stands, and the next run uses it."
                )
            else:
                logger.info("firm disconnected during the run", extra={"firm_id": config.firm_id})
                message += " The integration was disconnected while this run went on; it stays disconnected."
        findings.run_level(failure.kind.entry(label="Sync run", message=message))
    run.status = _status(run, part.run_entries(), failure)  # type: ignore[assignment]
    run.finished_at = iso(finished)
    run.xpm_calls += part.xpm_calls
    run.full_read = part.full_read
    completed = failure is None
    failures_in_a_row = _failures_in_a_row(config, failure)
    failing_since = _failing_since(config, run, failures_in_a_row)
    if not part.dry_run:
        # A run's own problems close at the next run that does not report them (SPEC B6).
        findings.sightings[RUN_KEY] = run_level_sighting(part.run_entries())
        _save_states(services, part, finished, complete=completed)
        if not disconnected:
            told = _notify_if_due(
                services,
                run,
                config,
                failure.kind.code if failure is not None else None,
                failures_in_a_row,
                failing_since,
                [*part.earlier_run_entries, *findings.entries],
                finished,
            )
            if told.asked:
                # The notification's own problems (no notification user, say) belong in this run's
                # log, and among its open problems (SPEC B6), judged now that it was asked: the
                # run-level state is written again when that opens or closes one.
                findings.entries.extend(told.entries)
                part.judged.add(_NOTIFY_CONDITION)
                written = part.states.get(RUN_KEY)
                if told.entries or (written is not None and _NOTIFY_CONDITION in written.codes):
                    findings.sightings[RUN_KEY] = run_level_sighting(part.run_entries())
                    # Just after the email: a notification user it found was fixed after it, so the
                    # next email counts that fix (the email's own moment counts as before it).
                    _save_states(services, part, finished + timedelta(microseconds=1), complete=False)
            elif _notification_user_fixed(services, part, config):
                part.judged.add(_NOTIFY_CONDITION)
                findings.sightings[RUN_KEY] = run_level_sighting(part.run_entries())
                _save_states(services, part, finished, complete=False)
            if failure is not None and failure.reconnect:
                # The firm runs no more: an email that could not go now is sent by the hourly
                # schedule once it can (SPEC A8), and one that went owes nothing.
                services.config.update(
                    config.firm_id, reconnect_notice_run_id=run.run_id if told.owed else None
                )
    _write_entries(services, run, findings.entries, finished)
    services.runs.save_run(run, finished)
    if part.dry_run:
        services.config.update(config.firm_id, preview_pending=False)
    else:
        # Only a first part's delivery starts the admin's run again: a later part's finds its run
        # ended (the checkpoint cleared) and does nothing.
        delivered_again = (
            failure is not None
            and failure.transient
            and part.delivered_again_on_failure
            and part.resume is None
        )
        _record_end(services, part, completed, failures_in_a_row, failing_since, delivered_again)
    run_codes = [entry.code for entry in part.run_entries()]
    if part.resume is not None:
        # A run in parts: the whole run since its first part started, not this invocation's share.
        seconds = max(seconds, (finished - parse_iso(run.started_at)).total_seconds())
    if not part.dry_run:
        # A preview is no sync: its planned records and its failures stay off the operators'
        # dashboard and alarms.
        record_run_metrics(run, seconds, run_codes)
    # An operator filtering on ERROR finds the runs the system failed; a firm's own problem is a
    # warning, and records failing in a completed run are the admin's error log, not the operator's.
    fault = failed_run_fault(run.status, run_codes)
    log = logger.info
    if run.status == "failed":
        log = logger.error if fault == "system" else logger.warning
    log(
        "sync run finished",
        extra={
            "firm_id": run.firm_id,
            "run_id": run.run_id,
            "trigger": run.trigger,
            "status": run.status,
            "dry_run": run.dry_run,
            "counts": run.counts,
            "xpm_calls": run.xpm_calls,
            "full_read": run.full_read,
            "entries": run.entry_count,
            "duration_ms": round(seconds * 1000),
        },
    )
    # A preview is never delivered again: SQS would hold the firm's message group (its real runs
    # included) for the queue's visibility timeout, only to find the preview ended. The admin asks again.
    transient = failure is not None and failure.transient and not part.dry_run
    return RunResult(run=run, entries=findings.entries, transient=transient)


def _notification_user_fixed(services: SyncServices, part: _Run, config: FirmConfig) -> bool:
    """Whether an open NOTIFICATION_USER_INVALID is fixed: a run-level problem closes at the next
    run that does not report it (SPEC B6), and a run with nothing to tell the admin still looks
    the user up (one read, and only while the problem is open) rather than report it unseen."""
    open_now = part.states.get(RUN_KEY)
    if services.notifier is None or open_now is None or _NOTIFY_CONDITION not in open_now.codes:
        return False
    return services.notifier.reaches_recipient(config)


# The run-level problems of a lost connection: what an owed notice is about.
_CONNECTION_LOST_CODES = frozenset({codes.XPM_NEEDS_RECONNECT.code, codes.XPM_WRONG_TENANT.code})
# The notifier's outcomes for an email that was due and did not go.
_NOT_GONE = frozenset({"suppressed", "send_failed", "error"})
# The notifier's outcomes that looked the notification user up (an error may have come first).
_RECIPIENT_LOOKED_UP = frozenset({"sent", "suppressed", "no_recipient", "send_failed"})


@dataclass(frozen=True)
class _Told:
    """What telling the admin about a run came to."""

    asked: bool = False  # the notifier was asked, and looked the notification user up
    owed: bool = False  # an email was due and did not go (the day's allowance used, SES failing)
    entries: tuple[Entry, ...] = ()  # its own problems (no notification user, say)
    sent_at: str | None = None  # when the email went, if it did


def _notify_if_due(
    services: SyncServices,
    run: SyncRun,
    config: FirmConfig,
    failure_code: str | None,
    failures_in_a_row: int,
    failing_since: str | None,
    entries: list[Entry],
    now: datetime,
) -> _Told:
    """Email the firm's admin about a run when SPEC A5 says this one is to be told about."""
    if services.notifier is None or not should_notify(
        run.status,
        failure_code,
        failures_in_a_row=failures_in_a_row,
        expected_to_sync_since=config.expected_to_sync_since(),
        now=now,
        failing_since=failing_since,
    ):
        return _Told()
    result = services.notifier(run, entries, config)
    if result.outcome != "sent":
        return _Told(
            asked=result.outcome in _RECIPIENT_LOOKED_UP,
            entries=tuple(result.entries),
            owed=result.outcome in _NOT_GONE,
        )
    # The moment its problems were opened and closed at: they are all in this email.
    sent_at = iso_precise(now)
    services.config.update(config.firm_id, last_notified_at=sent_at)
    return _Told(asked=True, entries=tuple(result.entries), sent_at=sent_at)


def _write_entries(services: SyncServices, run: SyncRun, entries: list[Entry], now: datetime) -> None:
    """This part's entries join the run's log after those of earlier parts, and each is one JSON line
    in the function's log: operators read the same error log in CloudWatch Logs (SPEC A5)."""
    run.entry_count = services.runs.add_entries(run, entries, now, start=run.entry_count)
    for entry in entries:
        logger.info(
            "sync run entry",
            extra={
                "firm_id": run.firm_id,
                "run_id": run.run_id,
                "dry_run": run.dry_run,
                # nested: an entry's "message" is not the log line's (Logs Insights: entry.code)
                "entry": entry.model_dump(exclude_none=True),
            },
        )


def _record_end(
    services: SyncServices,
    part: _Run,
    completed: bool,
    failures_in_a_row: int,
    failing_since: str | None,
    delivered_again: bool,
) -> None:
    """The run's bookkeeping always; its incremental state only if the firm's tenant is still the
    one the run read (SPEC A6: a tenant change in flight starts the next run afresh). The end of
    the admin's manual run reopens Start Sync, unless SQS delivers it again (``delivered_again``);
    another run's end leaves a manual run queued behind it pending (SPEC A6: 429 while queued)."""
    run, config = part.run, part.config
    released = {"run_pending": False} if _holds_manual_claim(part) and not delivered_again else {}
    services.config.update(
        config.firm_id, last_run_id=run.run_id, checkpoint=None, running_run_id=None, **released
    )
    run_codes = [entry.code for entry in part.run_entries()]
    state: dict[str, Any] = {
        "transient_failures_in_a_row": failures_in_a_row,
        "transient_failures_since": failing_since,
        "last_failure_owner": failed_run_fault(run.status, run_codes),
    }
    if completed:
        state["last_completed_run_started_at"] = run.started_at
        state["last_completed_run_finished_at"] = run.finished_at
        if part.full_read:
            state["last_full_read_started_at"] = run.started_at
            state["retry_client_uuids"] = None  # an earlier version's retries: this read found them
            # The first part's: one changed since reaches the clients of the parts before it next run.
            state["full_read_inputs"] = _applied_inputs(part)
            state["full_read_owed"] = False
        if part.people_digest is not None:
            state["people_digest"] = part.people_digest
    if not services.config.update_if_same_state(config.firm_id, config.sync_state_id, **state):
        logger.info(
            "the firm's tenant changed while this run went on; its state is not kept",
            extra={"firm_id": config.firm_id, "run_id": run.run_id},
        )
