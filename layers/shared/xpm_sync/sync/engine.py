"""One firm's sync run, start to finish (SPEC A1-A5, A7).

The run reads XPM staff (one call), syncs users, then streams clients (all of them on a full read,
else only those modified since the last completed run began) and retries the records that failed
last time. Each run is written to the sync log with its counts and entries; problems with single
records make a run ``partial``, problems that stop the run make it ``failed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from xpm_sync.adapters.active_table import ActiveRepository
from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.dynamodb import Table
from xpm_sync.adapters.metrics import record_run_metrics
from xpm_sync.adapters.notifier import NotifyResult
from xpm_sync.adapters.sync_log import RunLog
from xpm_sync.adapters.sync_queue import SyncQueue
from xpm_sync.adapters.tokens import FirmDisconnected, NeedsReconnect, TokenStore
from xpm_sync.adapters.xero_identity import (
    AppCredentialsUnavailable,
    InvalidClient,
    InvalidGrant,
    XeroIdentityError,
)
from xpm_sync.adapters.xpm.client import AccessTokenSource, XpmApi
from xpm_sync.adapters.xpm.errors import (
    XpmAuthError,
    XpmBadResponse,
    XpmError,
    XpmRateLimited,
    XpmUnavailable,
    XpmWrongTenant,
)
from xpm_sync.adapters.xpm.xml import XpmStatusError
from xpm_sync.domain import entries as codes
from xpm_sync.domain.clock import Clock, iso, parse_iso
from xpm_sync.domain.entries import Entry, EntryKind
from xpm_sync.domain.firm import Checkpoint, FirmConfig, full_read_due
from xpm_sync.domain.runs import SyncRun, Trigger, new_run_id
from xpm_sync.observability import logger
from xpm_sync.runtime import unlimited
from xpm_sync.sync.clients import ClientSync, People
from xpm_sync.sync.users import sync_users

# Clients modified this close to the last run's start are read again: clocks and XPM's own
# indexing are not exact, and reading a record twice costs nothing (unchanged records are not written).
MODIFIED_SINCE_MARGIN = timedelta(minutes=5)
# A queued continuation is delivered at once, or again after the queue's visibility timeout
# (template.yaml: 90 minutes) if a delivery failed; after this long it is taken as lost.
CONTINUATION_LOST_AFTER = timedelta(hours=2)
# Past this many records awaiting a retry, one full read is cheaper than one call per record.
MAX_SINGLE_RETRIES = 50
# XPM failing this many clients awaiting retry in a row is down, not troubled by one record: the
# rest of them wait for the next run.
UNAVAILABLE_RETRIES_IN_A_ROW = 2
# With less time than this left in the invocation, a run saves a checkpoint and queues its own
# continuation: enough to write the entries so far, the run and the checkpoint.
CHECKPOINT_MARGIN_SECONDS = 60.0

XpmFactory = Callable[[str, AccessTokenSource], XpmApi]


@dataclass
class SyncServices:
    """Everything a run talks to; the worker builds it from botocore and httpx, tests from moto."""

    config: ConfigRepository
    runs: RunLog
    active_table: Table
    tokens: TokenStore
    xpm_factory: XpmFactory
    clock: Clock
    queue: SyncQueue | None = None
    remaining_seconds: Callable[[], float] = unlimited
    # Called for failed and partial runs (the notification); returns entries for the run's log.
    after_run: Callable[[SyncRun, list[Entry], FirmConfig], NotifyResult] | None = None


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
    # The firm was disconnected while the run went on: its status and inbox are left alone.
    disconnected: bool = False


@dataclass
class _OutOfTime(Exception):
    checkpoint: Checkpoint


@dataclass
class _Progress:
    run: SyncRun
    resume: Checkpoint | None = None
    entries: list[Entry] = field(default_factory=list)
    full_read: bool = False
    retry_uuids: set[str] = field(default_factory=set)
    xpm_calls: int = 0


def run_sync(
    firm_id: str, trigger: Trigger, services: SyncServices, *, resume_run_id: str | None = None
) -> RunResult | None:
    """Run one sync for the firm (or go on with one that ran out of time).

    None when there is nothing to do: the firm is not connected, or the continuation is stale.
    """
    config = services.config.get(firm_id)
    if config is None or not config.can_sync():
        logger.info("firm not connected; nothing to sync", extra={"firm_id": firm_id})
        if config is not None and config.run_pending:
            services.config.update(firm_id, run_pending=False)
        return None
    progress = _start(config, trigger, services, resume_run_id)
    if progress is None:
        return None
    logger.append_keys(firm_id=firm_id, run_id=progress.run.run_id)
    try:
        return _run(config, services, progress)
    finally:
        logger.remove_keys(["firm_id", "run_id"])


def _start(
    config: FirmConfig, trigger: Trigger, services: SyncServices, resume_run_id: str | None
) -> _Progress | None:
    if resume_run_id is None and _continuing(config, services.clock.now()):
        # The run's next part is queued behind this request (one message group per firm): it does
        # the work this request asks for, and a new run would end it half done.
        logger.info(
            "a run of this firm is continuing; the request is left to it",
            extra={"firm_id": config.firm_id, "run_id": config.running_run_id, "trigger": trigger},
        )
        return None
    if resume_run_id is None:
        started = services.clock.now()
        run = SyncRun(
            firm_id=config.firm_id,
            run_id=new_run_id(started),
            trigger=trigger,
            status="running",
            started_at=iso(started),
        )
        if config.running_run_id:
            _close_interrupted(config.firm_id, config.running_run_id, services)
        services.runs.save_run(run, started)
        services.config.update(config.firm_id, running_run_id=run.run_id, checkpoint=None)
        return _Progress(run=run, retry_uuids=set(config.retry_client_uuids))
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
        return None
    return _Progress(run=unfinished, resume=checkpoint, retry_uuids=set(config.retry_client_uuids))


def _continuing(config: FirmConfig, now: datetime) -> bool:
    """A run stopped at a checkpoint and queued its next part, recently enough for that part to come.

    Past the queue's visibility timeout (and a margin) the part is taken as lost: the next request
    closes the run as interrupted and starts afresh.
    """
    checkpoint = config.checkpoint
    if checkpoint is None or checkpoint.saved_at is None or checkpoint.run_id != config.running_run_id:
        return False
    return now - parse_iso(checkpoint.saved_at) < CONTINUATION_LOST_AFTER


def _close_interrupted(firm_id: str, run_id: str, services: SyncServices) -> None:
    """Mark failed a run whose worker was stopped (timeout, out of memory) before it could end.

    Nothing it did is lost: records it wrote are matched by XPM UUID, and since it never
    completed, the next incremental read starts from before it began.
    """
    interrupted = services.runs.get_run(firm_id, run_id)
    if interrupted is None or interrupted.status != "running":
        return
    now = services.clock.now()
    interrupted.status = "failed"
    interrupted.finished_at = iso(now)
    entry = codes.INTERNAL_ERROR.entry(
        label="Sync run",
        message="This run stopped before it finished (its worker was stopped); the next run carried on.",
    )
    interrupted.entry_count = services.runs.add_entries(
        interrupted, [entry], now, start=interrupted.entry_count
    )
    services.runs.save_run(interrupted, now)
    logger.warning("closed a run whose worker was stopped", extra={"firm_id": firm_id, "run_id": run_id})


def _run(config: FirmConfig, services: SyncServices, progress: _Progress) -> RunResult:
    failure: _RunFailure | None = None
    clock_start = time.monotonic()
    try:
        _sync(config, services, progress)
    except _OutOfTime as out_of_time:
        return _suspend(config, services, progress, out_of_time.checkpoint)
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
    return _finish(config, services, progress, failure, time.monotonic() - clock_start)


def _sync(config: FirmConfig, services: SyncServices, progress: _Progress) -> None:
    if not config.tenant_id or not config.default_office_code:
        raise _RunFailure(codes.SYNC_NOT_CONFIGURED, "No XPM practice or default office is chosen yet.")
    repo = ActiveRepository(services.active_table, config.firm_id)
    office = repo.offices().get(config.default_office_code)
    if office is None:
        raise _RunFailure(
            codes.DEFAULT_OFFICE_MISSING,
            f"The default office {config.default_office_code} does not exist in Active.",
        )
    xpm = services.xpm_factory(config.tenant_id, services.tokens.for_firm(config.firm_id))
    try:
        _sync_with(xpm, config, services, progress, repo, office.code, office.default_partner_user_id)
    finally:
        progress.xpm_calls += xpm.calls
        xpm.close()
        repo.flush()  # whatever happened, the records this part created are written


def _sync_with(
    xpm: XpmApi,
    config: FirmConfig,
    services: SyncServices,
    progress: _Progress,
    repo: ActiveRepository,
    office_code: str,
    default_partner_user_id: str | None,
) -> None:
    resume = progress.resume
    counts = progress.run.counts
    # A continuation re-reads staff to resolve partners, but the first part already counted them.
    user_counts = counts["user"] if resume is None else dict.fromkeys(counts["user"], 0)
    users = sync_users(repo, xpm.list_staff(), user_counts)
    if resume is None:
        progress.entries.extend(users.entries)
    clients = ClientSync(
        repo=repo,
        people=People(
            staff_email_by_uuid=users.staff_email_by_uuid,
            user_id_by_email=users.user_id_by_email,
            default_partner_user_id=default_partner_user_id,
        ),
        default_office_code=office_code,
        counts=counts["client"],
        entries=progress.entries,
    )
    if resume is None:
        progress.full_read = (
            full_read_due(config, services.clock.now()) or len(progress.retry_uuids) > MAX_SINGLE_RETRIES
        )
        since = None
        if not progress.full_read:
            assert config.last_completed_run_started_at is not None  # full_read_due() otherwise
            since = parse_iso(config.last_completed_run_started_at) - MODIFIED_SINCE_MARGIN
    else:
        progress.full_read = resume.full_read
        since = parse_iso(resume.since) if resume.since else None
        clients.failed_uuids.update(resume.failed_uuids)
        clients.synced_uuids.update(resume.synced_retry_uuids)

    if progress.full_read:
        clients.load()
    _stream_clients(xpm, services, progress, clients, since)
    if progress.full_read:
        clients.settle()
        progress.retry_uuids = set(clients.failed_uuids)
        return
    pending = sorted(
        progress.retry_uuids - clients.synced_uuids - clients.failed_uuids - clients.waiting_uuids
    )
    vanished = _retry_clients(xpm, clients, pending, progress.entries)
    clients.settle()
    progress.retry_uuids = (progress.retry_uuids - clients.synced_uuids - vanished) | clients.failed_uuids


def _retry_clients(xpm: XpmApi, clients: ClientSync, pending: list[str], entries: list[Entry]) -> set[str]:
    """Fetch each client that failed in an earlier run by itself and apply it (SPEC A7), and return
    the UUIDs XPM no longer knows. A client XPM refuses or cannot give now stays awaiting a retry;
    the list's work stands either way."""
    vanished: set[str] = set()
    postponed: list[str] = []
    reasons: dict[str, None] = {}  # in the order met
    unavailable_in_a_row = 0
    for position, uuid in enumerate(pending):
        try:
            retried = xpm.get_client(uuid)
        except XpmStatusError as error:
            # Not an answer that the client is gone (get_client says None for those): XPM refused
            # this one call for a reason that may pass. The record stays in the retry set and is
            # asked again next run; one that keeps erroring leaves it at the daily full read, which
            # keeps only the UUIDs XPM still lists.
            logger.warning(
                "XPM refused a client awaiting retry; it is asked again next run",
                extra={"xpm_uuid": uuid, "error": str(error)},
            )
            postponed.append(uuid)
            reasons[f"XPM refused: {error.description or 'no description'}"] = None
            unavailable_in_a_row = 0
            continue
        except XpmUnavailable as error:
            logger.warning(
                "XPM did not give a client awaiting retry; it is asked again next run",
                extra={"xpm_uuid": uuid, "error": str(error)},
            )
            postponed.append(uuid)
            reasons["XPM did not answer"] = None
            unavailable_in_a_row += 1
            # One client XPM cannot give must not hold up the others; two in a row is XPM down, and
            # asking it for each of the rest would only spend the invocation's time and the quota.
            if unavailable_in_a_row >= UNAVAILABLE_RETRIES_IN_A_ROW:
                postponed.extend(pending[position + 1 :])
                break
            continue
        except XpmRateLimited as error:
            # Every further call would meet the same limit.
            logger.warning(
                "XPM's rate limit was reached while clients awaiting retry were fetched; they are "
                "asked again next run",
                extra={"xpm_uuid": uuid, "error": str(error)},
            )
            postponed.extend(pending[position:])
            reasons["XPM's rate limit was reached"] = None
            break
        unavailable_in_a_row = 0
        if retried is None:
            vanished.add(uuid)  # gone from XPM: nothing left to retry
        else:
            clients.apply(retried)
    if postponed:
        entries.append(
            codes.XPM_RETRIES_POSTPONED.entry(
                label="Sync run",
                message=f"{len(postponed)} client(s) that failed in an earlier run could not be fetched "
                f"from XPM again ({'; '.join(reasons)}); they stay awaiting a retry.",
            )
        )
    return vanished


def _stream_clients(
    xpm: XpmApi, services: SyncServices, progress: _Progress, clients: ClientSync, since: datetime | None
) -> None:
    """Apply the client list record by record; stop with a checkpoint when time runs short.

    A continuation skips the records the earlier part applied, trusting XPM's order only when the
    last record it applied is where it should be; otherwise it applies them all again, which is
    safe because unchanged records are not written and matching is by XPM UUID.
    """
    resume = progress.resume
    skip = resume.processed if resume is not None else 0
    if skip and not _apply_list(xpm, services, progress, clients, since, skip, resume):
        logger.warning("XPM's client order changed since the checkpoint; applying every record again")
        skip = 0
    if not skip:
        _apply_list(xpm, services, progress, clients, since, 0, None)


def _apply_list(
    xpm: XpmApi,
    services: SyncServices,
    progress: _Progress,
    clients: ClientSync,
    since: datetime | None,
    skip: int,
    resume: Checkpoint | None,
) -> bool:
    """One pass over the list; False when the record before ``skip`` is not the checkpoint's."""
    last_uuid: str | None = None
    for index, client in enumerate(xpm.iter_clients(modified_since=since)):
        if index < skip:
            if index == skip - 1 and resume is not None and client.uuid != resume.last_uuid:
                return False
            last_uuid = client.uuid
            continue
        # Each invocation applies at least one record, so a run always makes progress.
        if index > skip and services.remaining_seconds() < CHECKPOINT_MARGIN_SECONDS:
            # A client waiting for a code cannot wait across invocations: it fails for now and
            # is retried next run, by when its code's holder has moved.
            clients.settle()
            raise _OutOfTime(
                Checkpoint(
                    run_id=progress.run.run_id,
                    full_read=progress.full_read,
                    since=iso(since) if since else None,
                    processed=index,
                    last_uuid=last_uuid,
                    failed_uuids=sorted(clients.failed_uuids),
                    synced_retry_uuids=sorted(clients.synced_uuids & progress.retry_uuids),
                )
            )
        clients.apply(client)
        last_uuid = client.uuid
    return True


def _suspend(
    config: FirmConfig, services: SyncServices, progress: _Progress, checkpoint: Checkpoint
) -> RunResult:
    """Save what this part did and queue the next part: the run stays ``running`` until it ends."""
    if services.queue is None:
        raise RuntimeError("a run that must continue needs the sync queue")
    run = progress.run
    now = services.clock.now()
    run.xpm_calls += progress.xpm_calls
    run.full_read = progress.full_read
    run.entry_count = services.runs.add_entries(run, progress.entries, now, start=run.entry_count)
    services.runs.save_run(run, now)
    saved = checkpoint.model_copy(update={"saved_at": iso(now)})
    services.config.update(config.firm_id, checkpoint=saved.model_dump())
    services.queue.enqueue_continuation(
        config.firm_id, run.trigger, run.run_id, processed=checkpoint.processed
    )
    logger.info(
        "sync run continues in a new invocation",
        extra={"firm_id": run.firm_id, "run_id": run.run_id, "processed": checkpoint.processed},
    )
    return RunResult(run=run, entries=progress.entries, continued=True)


def _xpm_failure(error: XpmError) -> _RunFailure:
    if isinstance(error, XpmAuthError):
        return _RunFailure(codes.XPM_NEEDS_RECONNECT, "XPM refused the firm's connection.", reconnect=True)
    if isinstance(error, XpmWrongTenant):
        return _RunFailure(codes.XPM_WRONG_TENANT, "XPM refused access to the chosen practice.")
    if isinstance(error, XpmRateLimited):
        limit = f" ({error.problem} limit)" if error.problem else ""
        return _RunFailure(codes.XPM_RATE_LIMITED, f"XPM's rate limit was reached{limit}.")
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
        logger.error("the app's credentials secret could not be used", extra={"error": str(error)})
        return _RunFailure(
            codes.XERO_APP_CREDENTIALS_INVALID,
            f"This integration's app credentials could not be read while renewing access: {error}",
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


def _finish(
    config: FirmConfig,
    services: SyncServices,
    progress: _Progress,
    failure: _RunFailure | None,
    seconds: float,
) -> RunResult:
    run = progress.run
    finished = services.clock.now()
    # Set before anything else is written, so that a firm disconnected while this run went on is
    # neither marked for reconnecting again nor emailed about it.
    disconnected = failure is not None and (
        failure.disconnected
        or (failure.reconnect and not services.config.mark_needs_reconnect(config.firm_id))
    )
    if failure is not None:
        message = failure.message
        if disconnected and not failure.disconnected:
            logger.info("firm disconnected during the run", extra={"firm_id": config.firm_id})
            message += " The integration was disconnected while this run went on; it stays disconnected."
        progress.entries.append(failure.kind.entry(label="Sync run", message=message))
        run.status = "failed"
    elif any(counts["failed"] for counts in run.counts.values()):
        run.status = "partial"
    else:
        run.status = "success"
    run.finished_at = iso(finished)
    run.xpm_calls += progress.xpm_calls
    run.full_read = progress.full_read
    if services.after_run is not None and run.status in ("failed", "partial") and not disconnected:
        # The notification's own problems (no notification user, say) belong in this run's log.
        progress.entries.extend(services.after_run(run, progress.entries, config).entries)
    run.entry_count = services.runs.add_entries(run, progress.entries, finished, start=run.entry_count)
    services.runs.save_run(run, finished)

    changes: dict[str, Any] = {
        "last_run_id": run.run_id,
        "run_pending": False,
        "checkpoint": None,
        "running_run_id": None,
    }
    if failure is None:
        changes["last_completed_run_started_at"] = run.started_at
        changes["retry_client_uuids"] = progress.retry_uuids
        if progress.full_read:
            changes["last_full_read_started_at"] = run.started_at
    services.config.update(config.firm_id, **changes)
    record_run_metrics(run, seconds, [e.code for e in progress.entries if e.entity == "run"])
    logger.info(
        "sync run finished",
        extra={
            "firm_id": run.firm_id,
            "run_id": run.run_id,
            "trigger": run.trigger,
            "status": run.status,
            "counts": run.counts,
            "xpm_calls": run.xpm_calls,
            "full_read": run.full_read,
            "entries": run.entry_count,
            "duration_ms": round(seconds * 1000),
        },
    )
    return RunResult(run=run, entries=progress.entries, transient=failure is not None and failure.transient)
