"""The sync log table (SPEC B3): one item per run and one per entry, kept 90 days.

Layout: a run lives at ``pk=FIRM#{firm_id}``, ``sk=RUN#{run_id}``; run ids start with their UTC
start time, so a reverse query on the firm's partition lists runs newest first. A run's entries
live in their own partition, ``pk=RUN#{firm_id}#{run_id}``, ``sk=ENTRY#{n}``, so reading a run's
error log is one query and can never reach another firm's data.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from xpm_sync.adapters.dynamodb import Table
from xpm_sync.domain.entries import Entry
from xpm_sync.domain.errors import InvalidCursor
from xpm_sync.domain.runs import SyncRun

RETENTION = timedelta(days=90)


def _plain(value: Any) -> Any:
    """DynamoDB returns numbers as Decimal; the models want ints."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "as_integer_ratio") and not isinstance(value, bool | int | float):
        return int(value)
    return value


class RunLog:
    """Writes and reads runs and their entries."""

    def __init__(self, table: Table) -> None:
        self._table = table

    @staticmethod
    def _expiry(now: datetime) -> int:
        return int((now + RETENTION).timestamp())

    def save_run(self, run: SyncRun, now: datetime) -> None:
        item = run.model_dump(exclude_none=True)
        item.update(pk=f"FIRM#{run.firm_id}", sk=f"RUN#{run.run_id}", expires_at=self._expiry(now))
        self._table.put_item(Item=item)

    def add_entries(self, run: SyncRun, entries: Iterable[Entry], now: datetime, *, start: int = 0) -> int:
        """Append entries after the ``start`` already written; returns the new total."""
        count = start
        expires_at = self._expiry(now)
        with self._table.batch_writer() as batch:
            for entry in entries:
                item = entry.model_dump(exclude_none=True)
                item.update(
                    pk=f"RUN#{run.firm_id}#{run.run_id}",
                    sk=f"ENTRY#{count:07d}",
                    firm_id=run.firm_id,
                    run_id=run.run_id,
                    kind="entry",
                    expires_at=expires_at,
                )
                batch.put_item(Item=item)
                count += 1
        return count

    def get_run(self, firm_id: str, run_id: str) -> SyncRun | None:
        item = self._table.get_item(Key={"pk": f"FIRM#{firm_id}", "sk": f"RUN#{run_id}"}).get("Item")
        return SyncRun.model_validate(_plain(item)) if item else None

    def entries(self, firm_id: str, run_id: str) -> list[Entry]:
        found: list[Entry] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": f"RUN#{firm_id}#{run_id}"},
        }
        while True:
            page = self._table.query(**kwargs)
            found.extend(Entry.model_validate(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def list_runs(
        self, firm_id: str, *, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[SyncRun], str | None]:
        """Newest first, ``limit`` at a time; the cursor is opaque to callers."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :runs)",
            "ExpressionAttributeValues": {":pk": f"FIRM#{firm_id}", ":runs": "RUN#"},
            "ScanIndexForward": False,
            # One more than asked: DynamoDB hands back a LastEvaluatedKey whenever it stops at the
            # limit, even with nothing after it, and a cursor to an empty page helps nobody.
            "Limit": limit + 1,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = {"pk": f"FIRM#{firm_id}", "sk": f"RUN#{_decode_cursor(cursor)}"}
        items = self._table.query(**kwargs).get("Items", [])
        runs = [SyncRun.model_validate(_plain(item)) for item in items[:limit]]
        next_cursor = _encode_cursor(runs[-1].run_id) if len(items) > limit else None
        return runs, next_cursor


def _encode_cursor(run_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": run_id}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        run_id = data["after"]
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise InvalidCursor() from error
    if not isinstance(run_id, str) or not run_id or len(run_id) > 64:
        raise InvalidCursor()
    return run_id
