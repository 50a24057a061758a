"""The Start Sync gate (SPEC A6): nothing queued while a run is queued or running, and no manual
run within 5 minutes of the last.

Check and claim are one conditional UpdateItem, so two clicks racing each other queue one run: the
second fails the condition. ``run_pending`` is cleared by the worker when a run finishes; if a
worker died without clearing it, the claim is honoured again after ``PENDING_STALE_AFTER`` (longer
than a message can live through its three deliveries), so a firm is never locked out for good.
``running_run_id`` names the run in progress, scheduled or manual (set by the worker when it starts,
removed when it ends); it blocks the same way, with the same escape, counted from the run's start,
which its id carries (``xpm_sync.runs.new_run_id``: a UTC timestamp that sorts as text).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from botocore.exceptions import ClientError

from xpm_sync.api.errors import NeedsReconnectError, NotConnected, TooManyRequests
from xpm_sync.clock import Clock, iso, parse_iso
from xpm_sync.config import ConfigRepository
from xpm_sync.dynamodb import Table, is_condition_failure
from xpm_sync.runs import new_run_id

MANUAL_COOLDOWN = timedelta(minutes=5)
PENDING_STALE_AFTER = timedelta(hours=6)
# While a run is pending nobody knows when it ends; this is how soon the frontend should ask again.
PENDING_RETRY_SECONDS = 60

_CLAIM_CONDITION = (
    # Connected; an item written before status existed counts as connected once it has a tenant.
    "(#status = :connected OR (attribute_not_exists(#status) AND attribute_exists(tenant_id)))"
    " AND (attribute_not_exists(manual_requested_at) OR manual_requested_at <= :cooldown_start)"
    " AND (attribute_not_exists(run_pending) OR run_pending = :off OR manual_requested_at <= :stale_start)"
    " AND (attribute_not_exists(running_run_id) OR running_run_id < :stale_run_id)"
)


def _run_ids_before(moment: datetime) -> str:
    """Every id of a run started before ``moment`` sorts below this text (the id less its random tail).
    An id of any other shape sorts above it, so it blocks until the worker removes it."""
    return new_run_id(moment).rsplit("-", 1)[0]


class ManualRunGate:
    """Takes the Config table and a clock."""

    def __init__(self, table: Table, clock: Clock) -> None:
        self._table = table
        self._clock = clock

    def claim(self, firm_id: str) -> str | None:
        """Enable the hourly sync and mark a manual run pending; returns the previous start time.

        Raises TooManyRequests (with the seconds to wait) when a run is pending or too recent.
        """
        now = self._clock.now()
        try:
            answer = self._table.update_item(
                Key={"firm_id": firm_id},
                UpdateExpression="SET sync_enabled = :on, run_pending = :on, manual_requested_at = :now",
                ConditionExpression=_CLAIM_CONDITION,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":on": True,
                    ":off": False,
                    ":now": iso(now),
                    ":connected": "connected",
                    # ISO 8601 UTC strings of one fixed format sort as the moments they name.
                    ":cooldown_start": iso(now - MANUAL_COOLDOWN),
                    ":stale_start": iso(now - PENDING_STALE_AFTER),
                    ":stale_run_id": _run_ids_before(now - PENDING_STALE_AFTER),
                },
                ReturnValues="UPDATED_OLD",
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            raise self._refusal(firm_id) from None
        previous = answer.get("Attributes", {}).get("manual_requested_at")
        return previous if isinstance(previous, str) else None

    def release(self, firm_id: str, previous_requested_at: str | None) -> None:
        """Undo a claim whose run could not be queued, so the admin can press again at once."""
        names = {"#pending": "run_pending", "#at": "manual_requested_at"}
        if previous_requested_at is None:
            self._table.update_item(
                Key={"firm_id": firm_id},
                UpdateExpression="SET #pending = :off REMOVE #at",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={":off": False},
            )
            return
        self._table.update_item(
            Key={"firm_id": firm_id},
            UpdateExpression="SET #pending = :off, #at = :at",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":off": False, ":at": previous_requested_at},
        )

    def _refusal(self, firm_id: str) -> Exception:
        config = ConfigRepository(self._table).get(firm_id)
        if config is not None and config.connection == "needs_reconnect":
            return NeedsReconnectError()
        if config is None or config.connection != "connected":
            return NotConnected()
        now = self._clock.now()
        requested_at = config.manual_requested_at
        elapsed = math.inf
        if isinstance(requested_at, str):
            elapsed = (now - parse_iso(requested_at)).total_seconds()
        cooldown_left = (
            max(0, math.ceil(MANUAL_COOLDOWN.total_seconds() - elapsed)) if math.isfinite(elapsed) else 0
        )
        pending = config.run_pending and elapsed < PENDING_STALE_AFTER.total_seconds()
        running = config.running_run_id
        if isinstance(running, str) and running >= _run_ids_before(now - PENDING_STALE_AFTER):
            return TooManyRequests(
                max(cooldown_left, PENDING_RETRY_SECONDS),
                "A sync is running; Start Sync can be pressed again when it finishes.",
            )
        if pending:
            return TooManyRequests(
                max(cooldown_left, PENDING_RETRY_SECONDS),
                "A sync is already queued or running; Start Sync can be pressed again when it finishes.",
            )
        # The gate reopened between the refused update and this read: asking again will succeed.
        wait = max(cooldown_left, 1)
        return TooManyRequests(
            wait, f"Start Sync was pressed less than 5 minutes ago; try again in {wait} seconds."
        )
