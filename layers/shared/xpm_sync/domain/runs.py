"""A sync run as the sync log keeps it (SPEC B3), and the request that starts one (SPEC B1)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Trigger = Literal["schedule", "manual"]
RunStatus = Literal["running", "success", "partial", "failed"]
Outcome = Literal["created", "updated", "unchanged", "failed", "skipped"]
OUTCOMES: tuple[Outcome, ...] = ("created", "updated", "unchanged", "failed", "skipped")
# A dry run also counts the XPM clients it would link to an Active client already there (SPEC B6).
DRY_RUN_OUTCOMES: tuple[str, ...] = (*OUTCOMES, "linked")
# How long a run and its log are kept from their last write (the sync log's TTL, SPEC B3).
RUN_RETENTION = timedelta(days=90)


def new_counts(*, dry_run: bool = False) -> dict[str, dict[str, int]]:
    outcomes = DRY_RUN_OUTCOMES if dry_run else OUTCOMES
    return {entity: dict.fromkeys(outcomes, 0) for entity in ("user", "client")}


def new_run_id(started_at: datetime) -> str:
    # Microseconds keep two runs started in the same second in start order.
    return f"{started_at.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}"


class SyncRun(BaseModel):
    """A run as stored (B3); the runs API answers with ``api.models.RunOut``, mapped from it."""

    model_config = ConfigDict(extra="ignore")

    firm_id: str
    run_id: str
    kind: Literal["run"] = "run"
    trigger: Trigger
    status: RunStatus
    started_at: str
    finished_at: str | None = None
    counts: dict[str, dict[str, int]] = Field(default_factory=new_counts)
    xpm_calls: int = 0
    full_read: bool = False
    entry_count: int = 0
    # A preview (SPEC B6): planned, nothing written to Active, no sync state changed.
    dry_run: bool = False


class SyncRequest(BaseModel):
    """The body of a sync message (SPEC B1)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    firm_id: str = Field(min_length=1)
    trigger: Trigger
    # Set on the message a run queues for itself when it runs out of invocation time.
    resume_run_id: str | None = None
    # A preview (SPEC B6): the API made its run (``run_id``) when it queued it.
    dry_run: bool = False
    run_id: str | None = None
    # The hourly keep-alive of an idle connection (SPEC A6): refresh the firm's tokens, run nothing.
    keep_alive: bool = False
    # The hourly retry of a lost connection's email that could not go (SPEC A8): email, run nothing.
    notice: bool = False
    # A grant the API found refused (and marked needs_reconnect): record it as a run would, with its
    # run-level entry and the admin's email (SPEC A8), and run nothing. ``grant_id`` names the grant.
    lost_connection: bool = False
    grant_id: str | None = None
