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
from datetime import timedelta
from typing import Any

from xpm_sync import entries as codes
from xpm_sync.active.repository import ActiveRepository
from xpm_sync.clock import Clock, iso, parse_iso
from xpm_sync.config import ConfigRepository, FirmConfig, full_read_due
from xpm_sync.entries import Entry, EntryKind, raise_entry
from xpm_sync.observability import logger
from xpm_sync.queue import Trigger
from xpm_sync.runs import RunLog, SyncRun, new_run_id
from xpm_sync.sync.clients import ClientSync, People
from xpm_sync.sync.users import sync_users
from xpm_sync.tokens import NeedsReconnect, TokenStore
from xpm_sync.xpm.client import AccessTokenSource, XpmClient
from xpm_sync.xpm.errors import (
    XpmAuthError,
    XpmBadResponse,
    XpmError,
    XpmRateLimited,
    XpmUnavailable,
    XpmWrongTenant,
)

# Clients modified this close to the last run's start are read again: clocks and XPM's own
# indexing are not exact, and reading a record twice costs nothing (unchanged records are not written).
MODIFIED_SINCE_MARGIN = timedelta(minutes=5)
# Past this many records awaiting a retry, one full read is cheaper than one call per record.
MAX_SINGLE_RETRIES = 50

XpmFactory = Callable[[str, AccessTokenSource], XpmClient]


@dataclass
class SyncServices:
    """Everything a run talks to; the worker builds it from boto3 and httpx, tests from moto."""

    config: ConfigRepository
    runs: RunLog
    active_table: Any
    tokens: TokenStore
    xpm_factory: XpmFactory
    clock: Clock
    after_run: Callable[[SyncRun, list[Entry], FirmConfig], None] | None = None


@dataclass
class RunResult:
    run: SyncRun
    entries: list[Entry]
    # True when the run failed for a reason that may pass (XPM down, an AWS hiccup): SQS retries it.
    transient: bool = False


@dataclass
class _RunFailure(Exception):
    kind: EntryKind
    message: str
    transient: bool = False
    reconnect: bool = False


@dataclass
class _Progress:
    run: SyncRun
    entries: list[Entry] = field(default_factory=list)
    full_read: bool = False
    retry_uuids: set[str] = field(default_factory=set)
    xpm: XpmClient | None = None


def run_sync(firm_id: str, trigger: Trigger, services: SyncServices) -> RunResult | None:
    """Run one sync for the firm; None when the firm has nothing to sync (not connected)."""
    config = services.config.get(firm_id)
    if config is None or config.status != "connected":
        logger.info("firm not connected; nothing to sync", extra={"firm_id": firm_id})
        if config is not None and config.run_pending:
            services.config.update(firm_id, run_pending=False)
        return None
    started = services.clock.now()
    run = SyncRun(
        firm_id=firm_id,
        run_id=new_run_id(started),
        trigger=trigger,
        status="running",
        started_at=iso(started),
    )
    logger.append_keys(firm_id=firm_id, run_id=run.run_id)
    services.runs.save_run(run, started)
    progress = _Progress(run=run, retry_uuids=set(config.retry_client_uuids))
    failure: _RunFailure | None = None
    clock_start = time.monotonic()
    try:
        _sync(config, services, progress)
    except _RunFailure as caught:
        failure = caught
    except NeedsReconnect:
        failure = _RunFailure(
            codes.XPM_NEEDS_RECONNECT, "Xero no longer accepts this firm's connection.", reconnect=True
        )
    except XpmError as error:
        failure = _xpm_failure(error)
    except Exception as error:
        logger.exception("sync run stopped on an unexpected error")
        failure = _RunFailure(
            codes.INTERNAL_ERROR, f"The sync stopped: {type(error).__name__}.", transient=True
        )
    finally:
        logger.remove_keys(["firm_id", "run_id"])
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
    progress.xpm = xpm
    try:
        counts = progress.run.counts
        users = sync_users(repo, xpm.list_staff(), counts["user"])
        progress.entries.extend(users.entries)
        clients = ClientSync(
            repo=repo,
            people=People(
                staff_email_by_uuid=users.staff_email_by_uuid,
                user_id_by_email=users.user_id_by_email,
                default_partner_user_id=office.default_partner_user_id,
            ),
            default_office_code=office.code,
            counts=counts["client"],
            entries=progress.entries,
        )
        now = services.clock.now()
        progress.full_read = full_read_due(config, now) or len(progress.retry_uuids) > MAX_SINGLE_RETRIES
        if progress.full_read:
            for client in xpm.iter_clients():
                clients.apply(client)
            progress.retry_uuids = set(clients.failed_uuids)
            return
        assert config.last_completed_run_started_at is not None  # full_read_due() otherwise
        since = parse_iso(config.last_completed_run_started_at) - MODIFIED_SINCE_MARGIN
        for client in xpm.iter_clients(modified_since=since):
            clients.apply(client)
        vanished: set[str] = set()
        for uuid in sorted(progress.retry_uuids - clients.synced_uuids - clients.failed_uuids):
            retried = xpm.get_client(uuid)
            if retried is None:
                vanished.add(uuid)  # gone from XPM: nothing left to retry
            else:
                clients.apply(retried)
        progress.retry_uuids = (progress.retry_uuids - clients.synced_uuids - vanished) | clients.failed_uuids
    finally:
        xpm.close()


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


def _finish(
    config: FirmConfig,
    services: SyncServices,
    progress: _Progress,
    failure: _RunFailure | None,
    seconds: float,
) -> RunResult:
    run = progress.run
    finished = services.clock.now()
    if failure is not None:
        progress.entries.append(raise_entry(failure.kind, label="Sync run", message=failure.message))
        run.status = "failed"
    elif any(counts["failed"] for counts in run.counts.values()):
        run.status = "partial"
    else:
        run.status = "success"
    run.finished_at = iso(finished)
    run.xpm_calls = progress.xpm.calls if progress.xpm is not None else 0
    run.full_read = progress.full_read
    run.entry_count = services.runs.add_entries(run, progress.entries, finished)
    services.runs.save_run(run, finished)

    changes: dict[str, Any] = {"last_run_id": run.run_id, "run_pending": False}
    if failure is None:
        changes["last_completed_run_started_at"] = run.started_at
        changes["retry_client_uuids"] = progress.retry_uuids
        if progress.full_read:
            changes["last_full_read_started_at"] = run.started_at
    elif failure.reconnect:
        changes["status"] = "needs_reconnect"
    services.config.update(config.firm_id, **changes)
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
            "entries": len(progress.entries),
            "duration_ms": round(seconds * 1000),
        },
    )
    if services.after_run is not None and run.status in ("failed", "partial"):
        services.after_run(run, progress.entries, config)
    return RunResult(run=run, entries=progress.entries, transient=failure is not None and failure.transient)
