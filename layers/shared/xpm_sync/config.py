"""The Config table (SPEC B3): one item per firm with its integration settings and sync state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from xpm_sync.clock import parse_iso
from xpm_sync.dynamodb import Table, is_condition_failure

ConnectionStatus = Literal["not_connected", "connected", "needs_reconnect", "disconnected"]


class Checkpoint(BaseModel):
    """Where a run that ran out of invocation time stopped, so its continuation can go on."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    full_read: bool
    since: str | None = None  # the modifiedsince of an incremental read, ISO 8601 UTC
    processed: int  # client records of the list already applied
    last_uuid: str | None = None  # the last one of them, to check XPM's order has not changed
    failed_uuids: list[str] = Field(default_factory=list)
    synced_retry_uuids: list[str] = Field(default_factory=list)
    saved_at: str | None = None  # when the part that stopped here ended, ISO 8601 UTC


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
    last_full_read_started_at: str | None = None
    # XPM client UUIDs whose last sync failed: retried every run until they sync.
    retry_client_uuids: set[str] = Field(default_factory=set)
    # Manual runs (SPEC A6): when the last Start Sync was pressed and whether a run is pending.
    manual_requested_at: str | None = None
    run_pending: bool = False
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


def _to_item(config: FirmConfig) -> dict[str, Any]:
    item = config.model_dump(exclude_none=True)
    # DynamoDB rejects empty sets; an absent attribute means "nothing to retry".
    if not item.get("retry_client_uuids"):
        item.pop("retry_client_uuids", None)
    return item


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
        self._table.put_item(Item=_to_item(config))

    def update(self, firm_id: str, **values: Any) -> None:
        """Set (or, for ``None`` and empty sets, remove) the given attributes of one firm's config."""
        to_set = {k: v for k, v in values.items() if v is not None and v != set()}
        to_remove = [k for k in values if k not in to_set]
        parts = []
        names = {f"#{k}": k for k in values}
        if to_set:
            parts.append("SET " + ", ".join(f"#{k} = :{k}" for k in to_set))
        if to_remove:
            parts.append("REMOVE " + ", ".join(f"#{k}" for k in to_remove))
        if not parts:
            return
        kwargs: dict[str, Any] = {
            "Key": {"firm_id": firm_id},
            "UpdateExpression": " ".join(parts),
            "ExpressionAttributeNames": names,
        }
        if to_set:
            kwargs["ExpressionAttributeValues"] = {f":{k}": v for k, v in to_set.items()}
        self._table.update_item(**kwargs)

    def mark_needs_reconnect(self, firm_id: str) -> bool:
        """Set ``needs_reconnect``, but only while the firm is connected (an item written before
        status existed counts as connected, as in :meth:`FirmConfig.connection`).

        False when it is not: an admin who disconnected while a run was going keeps that status.
        """
        try:
            self._table.update_item(
                Key={"firm_id": firm_id},
                UpdateExpression="SET #status = :needs_reconnect",
                ConditionExpression=(
                    "attribute_exists(firm_id) AND (#status = :connected OR attribute_not_exists(#status))"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":needs_reconnect": "needs_reconnect", ":connected": "connected"},
            )
        except ClientError as error:
            if not is_condition_failure(error):
                raise
            return False
        return True

    def enabled_firm_ids(self) -> Iterator[str]:
        """Every firm whose hourly sync is on (SPEC B1), less those whose status says the
        connection is broken or gone: a message for them would only be dropped by the worker.

        An item with no status is queued: the worker judges it as it judges every firm (a firm can
        disconnect between dispatch and delivery anyway), by :meth:`FirmConfig.can_sync`.
        A scan is right here: the dispatcher reads the whole table once an hour, and SPEC B3
        rules out secondary indexes.
        """
        kwargs: dict[str, Any] = {
            "FilterExpression": (
                "sync_enabled = :on AND (#status = :connected OR attribute_not_exists(#status))"
            ),
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":on": True, ":connected": "connected"},
            "ProjectionExpression": "firm_id",
        }
        while True:
            page = self._table.scan(**kwargs)
            for item in page.get("Items", []):
                yield str(item["firm_id"])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def full_read_due(config: FirmConfig, now: datetime, *, every_hours: float = 24) -> bool:
    """SPEC A7: the first run, and one run a day, read every client."""
    if not config.last_completed_run_started_at or not config.last_full_read_started_at:
        return True
    return (now - parse_iso(config.last_full_read_started_at)).total_seconds() >= every_hours * 3600
