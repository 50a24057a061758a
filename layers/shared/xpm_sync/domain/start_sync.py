"""Start Sync's gate (SPEC A6): nothing is queued while a run is queued or running, nor within 5
minutes of the last manual start; and why a refused press was refused.

The check and the claim are one conditional write in the Config table
(``adapters.config_table.ConfigRepository.claim_manual_run``), so two clicks racing each other queue
one run. These are the rules that write's condition and its refusal follow.

``run_pending`` is cleared by the worker when a run finishes; if a worker died without clearing
it, the claim is honoured again after ``PENDING_STALE_AFTER`` (longer than a message can live
through its three deliveries), so a firm is never locked out for good. ``running_run_id`` names the
run in progress, scheduled or manual; it blocks the same way, with the same escape, counted from
the run's start, which its id carries (``domain.runs.new_run_id``: a UTC timestamp that sorts as text).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TypeVar

from xpm_sync.domain.clock import parse_iso
from xpm_sync.domain.errors import SyncTooSoon
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.runs import new_run_id

TooSoon = TypeVar("TooSoon", bound=SyncTooSoon)

MANUAL_COOLDOWN = timedelta(minutes=5)
PENDING_STALE_AFTER = timedelta(hours=6)
# While a run is pending nobody knows when it ends; this is how soon the frontend should ask again.
PENDING_RETRY_SECONDS = 60


def run_ids_before(moment: datetime) -> str:
    """Every id of a run started before ``moment`` sorts below this text (the id less its random tail).
    An id of any other shape sorts above it, so it blocks until the worker removes it."""
    return new_run_id(moment).rsplit("-", 1)[0]


def cooldown_and_pending(
    requested_at: str | None, pending: bool | None, now: datetime, cooldown: timedelta
) -> tuple[int, bool]:
    """The gate's state for a refused press (Start Sync's, or Preview's in ``domain.preview``):
    the whole seconds of ``cooldown`` left since ``requested_at``, and whether a ``pending`` claim
    still holds (it is ignored once ``PENDING_STALE_AFTER`` old)."""
    elapsed = (now - parse_iso(requested_at)).total_seconds() if requested_at else math.inf
    cooldown_left = max(0, math.ceil(cooldown.total_seconds() - elapsed)) if math.isfinite(elapsed) else 0
    return cooldown_left, bool(pending) and elapsed < PENDING_STALE_AFTER.total_seconds()


def refusal(config: FirmConfig, now: datetime) -> SyncTooSoon:
    """Why a connected firm's Start Sync was refused: the seconds to wait and the admin's message."""
    cooldown_left, pending = cooldown_and_pending(
        config.manual_requested_at, config.run_pending, now, MANUAL_COOLDOWN
    )
    running = config.running_run_id
    if isinstance(running, str) and running >= run_ids_before(now - PENDING_STALE_AFTER):
        return SyncTooSoon(
            max(cooldown_left, PENDING_RETRY_SECONDS),
            "A sync is running; Start Sync can be pressed again when it finishes.",
        )
    return too_soon(SyncTooSoon, cooldown_left, pending, what="A sync", button="Start Sync")


def too_soon(error: type[TooSoon], cooldown_left: int, pending: bool, *, what: str, button: str) -> TooSoon:
    """The refusal of a press of ``button`` (Start Sync, Preview): wait for the pending ``what``,
    or for the cooldown."""
    if pending:
        return error(
            max(cooldown_left, PENDING_RETRY_SECONDS),
            f"{what} is already queued or running; {button} can be pressed again when it finishes.",
        )
    # The gate reopened between the refused write and this read: asking again will succeed.
    wait = max(cooldown_left, 1)
    return error(wait, f"{button} was pressed less than 5 minutes ago; try again in {wait} seconds.")
