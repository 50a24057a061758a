"""The Config table (SPEC B3): one item per firm with its integration settings and sync state.

Every write here touches only the attributes it names, so the worker, the API and Start Sync never
overwrite what another of them set. A firm's item has ``status`` and ``sync_enabled`` from its
first write (``NEW_CONFIG_DEFAULTS``, set only where absent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from xpm_sync.adapters.dynamodb import Table, is_condition_failure, update_expression
from xpm_sync.domain.clock import Clock, iso
from xpm_sync.domain.errors import ConnectionBroken, NotConfigured, NotConnected, SyncTooSoon
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.preview import PREVIEW_COOLDOWN, preview_refusal
from xpm_sync.domain.start_sync import MANUAL_COOLDOWN, PENDING_STALE_AFTER, refusal, run_ids_before
from xpm_sync.observability import logger

# What a firm's config starts as (SPEC B3, B5: "not_connected before any connect").
NEW_CONFIG_DEFAULTS: Mapping[str, Any] = {"status": "not_connected", "sync_enabled": False}


def config_defaults(current: FirmConfig | None) -> Mapping[str, Any]:
    """What a write gives a config item where it lacks them: a new one's defaults, except that an
    item written before ``status`` existed keeps reading as it did (connected once it has a tenant:
    ``FirmConfig.connection``), rather than being disconnected by a "Later" or a Connect pressed."""
    if current is None:
        return NEW_CONFIG_DEFAULTS
    return {**NEW_CONFIG_DEFAULTS, "status": current.connection}


# What the hourly schedule's rules read (domain.hourly), besides the firm id and status.
_HOURLY_ATTRIBUTES = (
    "sync_enabled",
    "tenant_id",
    "default_office_code",
    "connected_at",
    "manual_requested_at",
    "last_completed_run_started_at",
    "last_completed_run_finished_at",
    "tokens_refreshed_at",
    "last_failure_owner",
    "reconnect_notice_run_id",
)

# Connected; an item written before status existed counts as connected once it has a tenant
# (as FirmConfig.connection reads it).
_CONNECTED = "(#status = :connected OR (attribute_not_exists(#status) AND attribute_exists(tenant_id)))"
# What Start Sync needs set (FirmConfig.missing_setup): a reconnect that clears the tenant between
# Start Sync's read and its write must not enable a schedule that can only fail.
_CONFIGURED = (
    "attribute_exists(tenant_id) AND attribute_exists(default_office_code)"
    " AND attribute_exists(notification_user_id)"
)
_MANUAL_RUN_ALLOWED = (
    f"{_CONNECTED} AND {_CONFIGURED}"
    " AND (attribute_not_exists(manual_requested_at) OR manual_requested_at <= :cooldown_start)"
    " AND (attribute_not_exists(run_pending) OR run_pending = :off OR manual_requested_at <= :stale_start)"
    " AND (attribute_not_exists(running_run_id) OR running_run_id < :stale_run_id)"
)
# A preview's gate (domain.preview) is its own: it reads nothing of the manual run's.
_PREVIEW_ALLOWED = (
    f"{_CONNECTED} AND {_CONFIGURED}"
    " AND (attribute_not_exists(preview_requested_at) OR preview_requested_at <= :cooldown_start)"
    " AND (attribute_not_exists(preview_pending) OR preview_pending = :off"
    " OR preview_requested_at <= :stale_start)"
)


def _item(config: FirmConfig) -> dict[str, Any]:
    return config.model_dump(exclude_none=True)


def _not_connected(config: FirmConfig | None) -> NotConnected:
    """Why a write that needs a connected firm was refused: Xero dropped the connection
    (``needs_reconnect``), or the firm is not connected at all."""
    if config is not None and config.connection == "needs_reconnect":
        return ConnectionBroken()
    return NotConnected()


class ConfigRepository:
    """Reads and writes firm configs."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def get(self, firm_id: str) -> FirmConfig | None:
        item = self._table.get_item(Key={"firm_id": firm_id}, ConsistentRead=True).get("Item")
        return FirmConfig.model_validate(item) if item else None

    def get_or_new(self, firm_id: str) -> FirmConfig:
        return self.get(firm_id) or FirmConfig(firm_id=firm_id)

    def put(self, config: FirmConfig) -> None:
        self._table.put_item(Item=_item(config))

    def update(self, firm_id: str, *, defaults: Mapping[str, Any] | None = None, **values: Any) -> None:
        """Set the given attributes of one firm's config (``None`` and empty sets remove them), and
        each of ``defaults`` not among them only where the item does not have it yet."""
        expression = update_expression(values, defaults=defaults)
        if expression:
            self._table.update_item(Key={"firm_id": firm_id}, **expression)

    def update_if_connected(
        self, firm_id: str, *, defaults: Mapping[str, Any] | None = None, **values: Any
    ) -> None:
        """:meth:`update`, only while the firm is connected: a write that loses a race with
        Disconnect (or with Xero dropping the connection) writes nothing and raises
        NotConnected / ConnectionBroken, so Disconnect's outcome stands (SPEC A6)."""
        expression = update_expression(values, defaults=defaults)
        if not expression:
            return
        expression["ExpressionAttributeNames"] = {
            **expression["ExpressionAttributeNames"],
            "#status": "status",
        }
        expression["ExpressionAttributeValues"] = {
            **expression.get("ExpressionAttributeValues", {}),
            ":connected": "connected",
        }
        if not self._update_if(firm_id, ConditionExpression=_CONNECTED, **expression):
            raise _not_connected(self.get(firm_id))

    def undo_disconnect(self, firm_id: str, *, attempt: str, **values: Any) -> bool:
        """Put ``values`` back after a Disconnect that could not finish, only while the firm still
        reads as that Disconnect (``attempt``, its ``disconnect_attempt``) left it: a connect, a
        mark, or another Disconnect that landed meanwhile stands. False, with nothing written, when
        one did."""
        expression = update_expression(values)
        expression["ExpressionAttributeNames"] = {
            **expression["ExpressionAttributeNames"],
            "#status": "status",
            "#attempt": "disconnect_attempt",
        }
        expression["ExpressionAttributeValues"] = {
            **expression.get("ExpressionAttributeValues", {}),
            ":disconnected": "disconnected",
            ":attempt": attempt,
        }
        return self._update_if(
            firm_id, ConditionExpression="#status = :disconnected AND #attempt = :attempt", **expression
        )

    def update_if_same_state(self, firm_id: str, sync_state_id: str | None, **values: Any) -> bool:
        """``update``, unless the firm's tenant changed since a run read ``sync_state_id``: a run
        on the old practice must not write its incremental state over the reset (SPEC A6).
        False, with nothing written, when it did."""
        expression = update_expression(values)
        if not expression:
            return True
        condition, values = _same_state(sync_state_id)
        if values:  # DynamoDB refuses an empty ExpressionAttributeValues
            expression.setdefault("ExpressionAttributeValues", {}).update(values)
        return self._update_if(firm_id, ConditionExpression=condition, **expression)

    def mark_needs_reconnect(
        self, firm_id: str, *, grant_id: str | None, practice_of: FirmConfig | None = None
    ) -> bool:
        """Set ``needs_reconnect``, but only while the firm is still connected by the grant that
        was refused: connected (an item written before status existed counts as connected, as in
        :meth:`FirmConfig.connection`) with ``grant_id``, as the refused caller read it; and, for
        a refusal of one practice (``practice_of``: the config the refused run read), while that
        practice is still the chosen one.

        False when it is not: an admin who disconnected while a run was going keeps that status,
        one who reconnected meanwhile keeps the new connection, and one who chose another practice
        keeps it connected (SPEC A6): the old practice's refusal says nothing of the new one.
        """
        same_grant = "grant_id = :grant_id" if grant_id is not None else "attribute_not_exists(grant_id)"
        values: dict[str, Any] = {":needs_reconnect": "needs_reconnect", ":connected": "connected"}
        if grant_id is not None:
            values[":grant_id"] = grant_id
        same_practice = ""
        if practice_of is not None:
            condition, state_values = _same_state(practice_of.sync_state_id)
            same_practice = f" AND {condition}"
            values.update(state_values)
        return self._update_if(
            firm_id,
            UpdateExpression="SET #status = :needs_reconnect",
            ConditionExpression=(
                "attribute_exists(firm_id) AND (#status = :connected OR attribute_not_exists(#status))"
                f" AND {same_grant}{same_practice}"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
        )

    def hourly_candidates(self) -> Iterator[FirmConfig]:
        """Every firm the hourly schedule may act on (``domain.hourly``), in one scan: the firms
        that are connected, those that lost their connection with an email still owed, and the
        items with no status (firms written before status existed, and the table's OAuth states
        and refresh leases, which the rules pass over as not connected).

        Only the attributes those rules read are fetched. A scan is right here: the dispatcher reads
        the whole table once an hour, and queueing, keep-alives and the operators' count of firms
        without a completed run all come from that one read. An item that cannot be read as a
        config (a value of the wrong type, written by hand) is logged and passed over: one firm's
        item never costs every other firm its hour.
        """
        for item in self._table.scan_items(
            FilterExpression=(
                "#status = :connected OR attribute_not_exists(#status)"
                " OR (#status = :lost AND attribute_type(reconnect_notice_run_id, :text))"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":connected": "connected", ":lost": "needs_reconnect", ":text": "S"},
            ProjectionExpression=", ".join(("firm_id", "#status", *_HOURLY_ATTRIBUTES)),
        ):
            try:
                yield FirmConfig.model_validate(item)
            except ValidationError as error:
                firm_id = item.get("firm_id")
                logger.error(
                    "config item that cannot be read: its firm is left out of this hour",
                    extra={
                        "firm_id": firm_id if isinstance(firm_id, str) else None,
                        # Where, not what: a value is not for the logs.
                        "attributes": sorted({".".join(map(str, e["loc"])) for e in error.errors()}),
                    },
                )

    def record_tokens_refreshed(self, firm_id: str, at: datetime) -> bool:
        """Note when the firm's tokens were last stored or refreshed (``tokens_refreshed_at``): the
        hourly keep-alive refreshes a connection left idle (SPEC A6).

        Only on an existing config item: a firm disconnected and removed meanwhile is not brought
        back as an item holding nothing but this. False when there was none.
        """
        return self._update_if(
            firm_id,
            UpdateExpression="SET tokens_refreshed_at = :at",
            ConditionExpression="attribute_exists(firm_id)",
            ExpressionAttributeValues={":at": iso(at)},
        )

    def _update_if(self, firm_id: str, **request: Any) -> bool:
        return self._table.update_item_if(Key={"firm_id": firm_id}, **request)

    # --- Start Sync (SPEC A6; the rules: domain.start_sync) ----------------------------------

    def claim_manual_run(self, firm_id: str, clock: Clock) -> str | None:
        """Enable the hourly sync and mark a manual run pending, in one conditional write; returns
        the previous start time (for :meth:`release_manual_run`).

        Raises NotConnected / ConnectionBroken, NotConfigured naming what the setup lacks, or
        SyncTooSoon with the seconds to wait.
        """
        now = clock.now()
        return self._claim(
            firm_id,
            now,
            update="SET sync_enabled = :on, run_pending = :on, manual_requested_at = :now",
            requested_at="manual_requested_at",
            allowed=_MANUAL_RUN_ALLOWED,
            cooldown=MANUAL_COOLDOWN,
            extra_values={":stale_run_id": run_ids_before(now - PENDING_STALE_AFTER)},
            refused=lambda config: refusal(config, clock.now()),
        )

    def release_manual_run(self, firm_id: str, previous_requested_at: str | None) -> None:
        """Undo a claim whose run could not be queued, so the admin can press again at once."""
        self.update(firm_id, run_pending=False, manual_requested_at=previous_requested_at)

    # --- Preview (SPEC B5, B6; the rules: domain.preview) ---------------------------------------

    def claim_preview(self, firm_id: str, clock: Clock) -> str | None:
        """Mark a preview pending, in one conditional write; returns the previous request time (for
        :meth:`release_preview`). Unlike Start Sync it enables nothing: a preview changes no sync state.

        Raises NotConnected / ConnectionBroken, NotConfigured naming what the setup lacks, or
        PreviewTooSoon with the seconds to wait.
        """
        return self._claim(
            firm_id,
            clock.now(),
            update="SET preview_pending = :on, preview_requested_at = :now",
            requested_at="preview_requested_at",
            allowed=_PREVIEW_ALLOWED,
            cooldown=PREVIEW_COOLDOWN,
            extra_values={},
            refused=lambda config: preview_refusal(config, clock.now()),
        )

    def release_preview(self, firm_id: str, previous_requested_at: str | None) -> None:
        """Undo a claim whose preview could not be queued, so the admin can press again at once."""
        self.update(firm_id, preview_pending=False, preview_requested_at=previous_requested_at)

    # --- What Start Sync and Preview share -----------------------------------------------------

    def _claim(
        self,
        firm_id: str,
        now: datetime,
        *,
        update: str,
        requested_at: str,
        allowed: str,
        cooldown: timedelta,
        extra_values: Mapping[str, Any],
        refused: Callable[[FirmConfig], SyncTooSoon],
    ) -> str | None:
        """Set what ``update`` sets (``requested_at`` to now), in one write conditional on
        ``allowed``; returns the previous ``requested_at``. When the condition fails, the config
        read again says why: not connected, not configured, or ``refused`` (too soon)."""
        try:
            answer = self._table.update_item(
                Key={"firm_id": firm_id},
                UpdateExpression=update,
                ConditionExpression=allowed,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":on": True,
                    ":off": False,
                    ":now": iso(now),
                    ":connected": "connected",
                    # ISO 8601 UTC strings of one fixed format sort as the moments they name.
                    ":cooldown_start": iso(now - cooldown),
                    ":stale_start": iso(now - PENDING_STALE_AFTER),
                    **extra_values,
                },
                ReturnValues="UPDATED_OLD",
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            config = self.get(firm_id)
            if config is None or config.connection != "connected":
                raise _not_connected(config) from None
            missing = config.missing_setup()
            if missing:
                raise NotConfigured(missing) from None
            raise refused(config) from None
        previous = answer.get("Attributes", {}).get(requested_at)
        return previous if isinstance(previous, str) else None


def _same_state(sync_state_id: str | None) -> tuple[str, dict[str, Any]]:
    """The condition that the firm's tenant is still the one a run read (``sync_state_id``)."""
    if sync_state_id is None:
        return "attribute_not_exists(sync_state_id)", {}
    return "sync_state_id = :sync_state_id", {":sync_state_id": sync_state_id}
