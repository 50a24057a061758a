"""A firm's integration settings and the sync's own state (SPEC B3's Config item), and the rules
read from them: is the firm connected, is its setup complete, is a full read due, what a tenant
change resets.

The item stays small whatever the firm's size: nothing here grows with the number of records (the
state kept per record lives in the sync log table, SPEC B3)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from xpm_sync.domain.clock import latest, parse_iso
from xpm_sync.domain.entries import Entry

ConnectionStatus = Literal["not_connected", "connected", "needs_reconnect", "disconnected"]


class Checkpoint(BaseModel):
    """Where a run that ran out of invocation time stopped, so its continuation can go on.

    Bounded whatever the firm's size: which records failed is kept per record in the sync log
    (their states), not here."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    full_read: bool
    since: str | None = None  # the modifiedsince of an incremental read, ISO 8601 UTC
    # "list": XPM's answer is being applied; "retries": the copies of failed records are.
    phase: Literal["list", "retries"] = "list"
    processed: int = 0  # client records of the list already applied
    last_uuid: str | None = None  # the last one of them, to check XPM's order has not changed
    saved_at: str | None = None  # when the part that stopped here ended, ISO 8601 UTC
    # Parts in a row that applied no record before their time ran out (SPEC A7: XPM_TOO_SLOW).
    parts_without_progress: int = 0
    # The run-level entries of the parts so far (a few at most: one per run-level code): the
    # run's own problems are judged on the whole run when it ends (SPEC B6). pydantic gives each
    # instance its own copy of a list default; ``default_factory=list`` would cost every cold
    # start ~10 ms (pydantic reads the builtin's signature from text, compiling tokenize's regexes).
    run_entries: list[Entry] = []
    # What the run's first part applied from Active (FirmConfig.full_read_inputs): a full read in
    # parts records that, so a Default Partner changed between its parts is applied at the next run.
    applied_inputs: dict[str, str] | None = None
    # The run's staff were synced by an earlier part (False: it stopped reading the staff list, and
    # the next part syncs them, counts them and looks at the connection's owner).
    users_synced: bool = True


class FirmConfig(BaseModel):
    """A firm's integration settings and the sync's own state, exactly as stored."""

    model_config = ConfigDict(extra="ignore")

    firm_id: str
    sync_name: str | None = None
    tenant_id: str | None = None
    tenant_name: str | None = None
    default_office_code: str | None = None
    notification_user_id: str | None = None
    status: ConnectionStatus = "not_connected"
    sync_enabled: bool = False
    last_run_id: str | None = None
    connected_by_name: str | None = None
    connected_by_email: str | None = None
    connected_at: str | None = None
    # Incremental sync state (SPEC A7): ISO 8601 UTC start times.
    last_completed_run_started_at: str | None = None
    # When that run ended: a run in parts may end hours after it began (SPEC A5's 3 hours count from
    # here).
    last_completed_run_finished_at: str | None = None
    last_full_read_started_at: str | None = None
    # What the last completed full read applied from Active that XPM's answer does not say (the
    # Default Partner of clients with none in XPM, {} for none); absent when no full read recorded it.
    full_read_inputs: dict[str, str] | None = None
    # A full read began applying other inputs than those and has not completed since: the clients
    # it reached may carry them, whatever the inputs are now, so the next run reads every client.
    full_read_owed: bool = False
    # What the firm's XPM staff resolved to at the last completed run (PeopleDirectory.digest): a
    # change lets the clients synced with their Manager unresolved be applied again (SPEC A7).
    people_digest: str | None = None
    # Written by the versions before the sync kept its retries per record (issue 19): the clients
    # then awaiting a retry. A firm that still has it is read whole once, which finds them again.
    retry_client_uuids: set[str] | None = None
    # A fresh value at every tenant change: a run that began under another value must not write
    # its incremental state over the reset (SPEC A6).
    sync_state_id: str | None = None
    # Which of the firm's grants the config describes: new at every connect, so a caller that met
    # a refused grant marks the firm for reconnecting only if no connect has replaced it since.
    grant_id: str | None = None
    # Set by a Disconnect until it ends: one Xero could not complete puts the firm back only as
    # that attempt left it (api.service.IntegrationService.disconnect).
    disconnect_attempt: str | None = None
    # Self-clearing run failures (XPM unavailable, rate limited) since the last completed run: the
    # notification waits for the third (SPEC A5).
    transient_failures_in_a_row: int = 0
    # The start of the first of those runs: for a firm that never completed a run and whose config
    # does not say when it connected, where "no completed run for 3 hours" is counted from.
    transient_failures_since: str | None = None
    # Whose fault the last run's failure was ("firm": its admin fixes it; none when it completed):
    # the hourly count of firms without a completed run is the operators', not the firms' own.
    last_failure_owner: Literal["firm", "system"] | None = None
    # When the firm's notification user was last emailed: "new" and "fixed" are counted from here.
    last_notified_at: str | None = None
    # The run that lost the connection, when its email could not go (the day's email already sent,
    # or SES failing): the firm runs no more, so the hourly schedule sends it once it can (SPEC A8).
    reconnect_notice_run_id: str | None = None
    # When the firm's tokens were last refreshed: an idle connection is refreshed before Xero
    # drops it (SPEC A6: 30 days, of Xero's 60).
    tokens_refreshed_at: str | None = None
    # Manual runs (SPEC A6): when the last Start Sync was pressed and whether a run is pending.
    manual_requested_at: str | None = None
    run_pending: bool = False
    # Previews (SPEC B6): when the last was asked for, and whether one is queued or running.
    preview_requested_at: str | None = None
    preview_pending: bool = False
    checkpoint: Checkpoint | None = None
    # The run in progress: a worker stopped by the runtime cannot close its run, the next run does.
    running_run_id: str | None = None

    @property
    def connection(self) -> ConnectionStatus:
        """The status, with an item written before status existed read as connected once it has a
        tenant: the worker, the dispatcher and the API all judge a firm by this."""
        if "status" not in self.model_fields_set and self.tenant_id is not None:
            return "connected"
        return self.status

    def can_sync(self) -> bool:
        return self.connection == "connected"

    def runs_when_asked(self, trigger: str) -> bool:
        """Whether a run queued with ``trigger`` runs now (SPEC A6). A paused firm (``sync_enabled``
        false) runs no hourly run; the admin's Start Sync runs, unless it was pressed before the
        reconnect that paused the firm (it asked for the practice of then, and the one chosen since,
        if any, waits for the admin's Start Sync), or the setup lacks what Start Sync needs (the run
        could only fail). An item that never recorded ``sync_enabled`` (written by something other
        than this API, which always writes it) runs what it is sent; the hourly schedule queues
        nothing for it (``domain.hourly.due_for_sync``) until Start Sync enables it."""
        if self.sync_enabled or "sync_enabled" not in self.model_fields_set:
            return True
        if trigger != "manual" or self.missing_setup():
            return False
        asked, connected = self.manual_requested_at, self.connected_at
        return asked is None or connected is None or parse_iso(asked) >= parse_iso(connected)

    def expected_to_sync_since(self) -> str | None:
        """Where SPEC A5's "no completed run for 3 hours" counts from: the end of the last completed
        run or, when later, the connection or the admin's last Start Sync (either starts the sync
        afresh: a setup finished hours after connecting, or a firm saved with Later for days, has
        not been failing since it connected). None when none of them is known."""
        return latest(
            self.last_completed_run_finished_at or self.last_completed_run_started_at,
            self.connected_at,
            self.manual_requested_at,
        )

    def missing_setup(self) -> list[str]:
        """The fields Start Sync needs that the setup has not set yet (SPEC A6: NOT_CONFIGURED)."""
        needed = (
            ("tenant_id", self.tenant_id),
            ("default_office_code", self.default_office_code),
            ("notification_user_id", self.notification_user_id),
        )
        return [name for name, value in needed if not value]


def tenant_change(current: FirmConfig, tenant_id: str | None) -> dict[str, Any]:
    """What a change of tenant resets (``{}`` when the tenant stays): incremental state belongs to
    one practice, so the new one starts with a full read, and a run still going on the old one
    cannot write its state over the reset (its ``sync_state_id`` no longer matches).

    The last completed run stays on record: it did complete, and SPEC A5's "no completed run for 3
    hours" counts from it, so a passing outage right after the change waits like any other. It
    anchors no read of the new practice: ``full_read_due`` asks for a full read until one completes.
    """
    if current.tenant_id is None or current.tenant_id == tenant_id:
        return {}
    return {
        "last_full_read_started_at": None,
        "full_read_inputs": None,
        # A run interrupted mid-practice must not resume on another practice's client list.
        "checkpoint": None,
        "sync_state_id": secrets.token_hex(8),
    }


# Hourly runs start a few seconds after the hour, later or sooner from one hour to the next: with
# no slack, the run a day later could start a second short of 24 hours, and the full read slip to
# the next hour, day after day (some days would have none).
FULL_READ_SLACK = timedelta(minutes=30)


def inputs_changed(config: FirmConfig, default_partner_user_id: str | None) -> bool:
    """Whether the Default Partner changed since the last full read applied it: the clients that
    use it are in no incremental answer (XPM did not change them), so only a full read reaches them
    (SPEC A2). Unknown (no full read recorded it yet) is no change: the daily full read records it."""
    if config.full_read_owed:
        return True
    if config.full_read_inputs is None:
        return False
    return config.full_read_inputs.get("default_partner_user_id") != default_partner_user_id


def full_read_due(config: FirmConfig, now: datetime, *, every_hours: float = 24) -> bool:
    """SPEC A7: the first run, and one run a day, read every client."""
    if not config.last_completed_run_started_at or not config.last_full_read_started_at:
        return True
    if config.retry_client_uuids:
        return True
    since = now - parse_iso(config.last_full_read_started_at)
    return since >= timedelta(hours=every_hours) - FULL_READ_SLACK
