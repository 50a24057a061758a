"""What the hourly schedule does for each firm (SPEC A1, A6, B1), from the firm's config alone.

- A firm whose sync is enabled gets a sync message, unless its status says the connection is
  broken or gone (an item with no status gets one: the worker judges every firm by
  ``FirmConfig.can_sync``).
- A connected firm whose sync is not enabled (Later, or paused) and whose tokens were not refreshed
  for 30 days gets a keep-alive message, so its connection never expires unused: Xero drops a
  refresh token unused for 60 days (SPEC A6, A8). The config records when the tokens were last
  refreshed (or stored at connect); for a config that records neither, the stored access token's
  expiry says it, and nothing is queued on a guess (SPEC B1: the hourly messages are the enabled
  firms' runs, and only a connection known to be idle adds one).
- A firm whose connection was lost (``needs_reconnect``) and whose email about it could not go
  (that day's email already sent, or SES failing) gets a notice message until it goes: its runs
  have stopped, so nothing else would ever tell the admin (SPEC A8).
- Connected, enabled firms with no completed run for 3 hours are counted: the operators' signal
  that runs are not getting through (SPEC A5 uses the same 3 hours for the firm's email).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from xpm_sync.domain.clock import parse_iso
from xpm_sync.domain.firm import FirmConfig

# Half of Xero's 60 days: a keep-alive that fails for a while (Xero down, an outage of ours) is
# retried every hour for a month before the refresh token would expire.
KEEP_ALIVE_AFTER = timedelta(days=30)
# Xero's access tokens live 30 minutes from the refresh that issued them (SPEC A8).
ACCESS_TOKEN_LIFETIME = timedelta(minutes=30)
NO_COMPLETED_RUN_AFTER = timedelta(hours=3)


@dataclass
class HourlyPlan:
    """One pass of the schedule over every firm: whom to queue, and the firms it worries about."""

    sync_firm_ids: list[str] = field(default_factory=list)
    keep_alive_firm_ids: list[str] = field(default_factory=list)
    notice_firm_ids: list[str] = field(default_factory=list)
    # Idle connections whose config records no refresh: judged by their stored tokens' expiry.
    idle_without_recorded_refresh: list[FirmConfig] = field(default_factory=list)
    firms_without_completed_run: int = 0
    # Configs holding a date that cannot be read: left out of what needed it, never the hour's end.
    unreadable_firm_ids: list[str] = field(default_factory=list)


def due_for_sync(config: FirmConfig) -> bool:
    if not config.sync_enabled:
        return False
    # An item written before status existed is queued even without a tenant; the worker then runs
    # nothing for it, as it does for any firm that cannot sync by the time its message arrives.
    return "status" not in config.model_fields_set or config.connection == "connected"


def owed_reconnect_notice(config: FirmConfig) -> bool:
    """A lost connection whose email has not gone yet (the run that lost it could not send it)."""
    return config.connection == "needs_reconnect" and config.reconnect_notice_run_id is not None


def _older_than(moment: str | None, age: timedelta, now: datetime) -> bool:
    # No moment at all: an item written before these attributes existed, so older than any age here.
    return moment is None or now - parse_iso(moment) >= age


def idle_connection(config: FirmConfig) -> bool:
    """A connected firm that does not sync hourly: nothing else uses its tokens."""
    return not config.sync_enabled and config.connection == "connected"


def refresh_unrecorded(config: FirmConfig) -> bool:
    """An idle connection whose config says neither when its tokens were refreshed nor when it
    connected (a config written by hand, or before these attributes existed)."""
    return idle_connection(config) and not (config.tokens_refreshed_at or config.connected_at)


def last_refresh(config: FirmConfig, *, stored_expires_at: int | None = None) -> datetime | None:
    """When the firm's tokens were last refreshed: as its config records it (or, never refreshed
    since, when it connected); else from the stored access token's expiry; None when nothing says."""
    recorded = config.tokens_refreshed_at or config.connected_at
    if recorded is not None:
        return parse_iso(recorded)
    if stored_expires_at is not None:
        try:
            return datetime.fromtimestamp(stored_expires_at, UTC) - ACCESS_TOKEN_LIFETIME
        except (OverflowError, OSError, ValueError):
            # No date (milliseconds, say): read as long ago, so a refresh records one.
            return datetime.fromtimestamp(0, UTC)
    return None


def due_for_keep_alive(config: FirmConfig, now: datetime, *, stored_expires_at: int | None = None) -> bool:
    """An idle connection whose tokens were last refreshed 30 days ago or more
    (``stored_expires_at``: the stored tokens' ``expires_at``, for a config that records no refresh)."""
    if not idle_connection(config):
        return False
    refreshed = last_refresh(config, stored_expires_at=stored_expires_at)
    return refreshed is not None and now - refreshed >= KEEP_ALIVE_AFTER


def without_completed_run(config: FirmConfig, now: datetime) -> bool:
    """A connected, enabled firm whose last completed run (success or partial) ended 3 hours ago or
    more; counted from when it connected, or the admin last pressed Start Sync, instead when that
    is later (``FirmConfig.expected_to_sync_since``: either starts the sync afresh).

    A firm whose setup names no practice or default office is left out: its runs can only fail with
    SYNC_NOT_CONFIGURED, which its admin fixes, not an operator. So is a firm whose last run failed
    on a problem of its own (a default office deleted, say): its admin is told (SPEC A5).
    """
    if not config.sync_enabled or config.connection != "connected":
        return False
    if not config.tenant_id or not config.default_office_code or config.last_failure_owner == "firm":
        return False
    return _older_than(config.expected_to_sync_since(), NO_COMPLETED_RUN_AFTER, now)


def plan_hour(configs: Iterable[FirmConfig], now: datetime) -> HourlyPlan:
    """Every firm's part in the hour. One firm's unreadable config never costs the others theirs."""
    plan = HourlyPlan()
    for config in configs:
        try:
            _plan_firm(plan, config, now)
        except ValueError:
            plan.unreadable_firm_ids.append(config.firm_id)
    return plan


def _plan_firm(plan: HourlyPlan, config: FirmConfig, now: datetime) -> None:
    if due_for_sync(config):
        plan.sync_firm_ids.append(config.firm_id)
    elif due_for_keep_alive(config, now):
        plan.keep_alive_firm_ids.append(config.firm_id)
    elif refresh_unrecorded(config):
        plan.idle_without_recorded_refresh.append(config)
    elif owed_reconnect_notice(config):
        plan.notice_firm_ids.append(config.firm_id)
    if without_completed_run(config, now):
        plan.firms_without_completed_run += 1
