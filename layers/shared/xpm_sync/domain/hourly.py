"""What the hourly schedule does for each firm (SPEC A1, A6, B1), from the firm's config alone.

- A firm whose sync is enabled gets a sync message, unless its status says the connection is
  broken or gone (an item with no status gets one: the worker judges every firm by
  ``FirmConfig.can_sync``).
- A connected firm whose sync is not enabled (Later, or paused) and whose tokens were not refreshed
  for 30 days gets a keep-alive message, so its connection never expires unused: Xero drops a
  refresh token unused for 60 days (SPEC A6, A8).
- Connected, enabled firms with no completed run for 3 hours are counted: the operators' signal
  that runs are not getting through (SPEC A5 uses the same 3 hours for the firm's email).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from xpm_sync.domain.clock import parse_iso
from xpm_sync.domain.firm import FirmConfig

# Half of Xero's 60 days: a keep-alive that fails for a while (Xero down, an outage of ours) is
# retried every hour for a month before the refresh token would expire.
KEEP_ALIVE_AFTER = timedelta(days=30)
NO_COMPLETED_RUN_AFTER = timedelta(hours=3)


@dataclass
class HourlyPlan:
    """One pass of the schedule over every firm: whom to queue, and the firms it worries about."""

    sync_firm_ids: list[str] = field(default_factory=list)
    keep_alive_firm_ids: list[str] = field(default_factory=list)
    firms_without_completed_run: int = 0


def due_for_sync(config: FirmConfig) -> bool:
    if not config.sync_enabled:
        return False
    # An item written before status existed is queued even without a tenant; the worker then runs
    # nothing for it, as it does for any firm that cannot sync by the time its message arrives.
    return "status" not in config.model_fields_set or config.connection == "connected"


def _older_than(moment: str | None, age: timedelta, now: datetime) -> bool:
    # No moment at all: an item written before these attributes existed, so older than any age here.
    return moment is None or now - parse_iso(moment) >= age


def due_for_keep_alive(config: FirmConfig, now: datetime) -> bool:
    """A connected firm that does not sync hourly, whose tokens were last refreshed (or, never
    refreshed since, stored at connect) 30 days ago or more."""
    if config.sync_enabled or config.connection != "connected":
        return False
    return _older_than(config.tokens_refreshed_at or config.connected_at, KEEP_ALIVE_AFTER, now)


def without_completed_run(config: FirmConfig, now: datetime) -> bool:
    """A connected, enabled firm whose last completed run (success or partial) began 3 hours ago or
    more; one that never completed one counts from when it connected.

    A firm whose setup names no practice or default office is left out: its runs can only fail with
    SYNC_NOT_CONFIGURED, which its admin fixes, not an operator. So is a firm whose last run failed
    on a problem of its own (a default office deleted, say): its admin is told (SPEC A5).
    """
    if not config.sync_enabled or config.connection != "connected":
        return False
    if not config.tenant_id or not config.default_office_code or config.last_failure_owner == "firm":
        return False
    return _older_than(
        config.last_completed_run_started_at or config.connected_at, NO_COMPLETED_RUN_AFTER, now
    )


def plan_hour(configs: Iterable[FirmConfig], now: datetime) -> HourlyPlan:
    plan = HourlyPlan()
    for config in configs:
        if due_for_sync(config):
            plan.sync_firm_ids.append(config.firm_id)
        elif due_for_keep_alive(config, now):
            plan.keep_alive_firm_ids.append(config.firm_id)
        if without_completed_run(config, now):
            plan.firms_without_completed_run += 1
    return plan
