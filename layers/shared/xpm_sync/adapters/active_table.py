"""The Active table (SPEC B3), as far as the sync may touch it.

Reads are one partition query per entity (``pk=FIRM#{firm_id}``, ``sk`` prefix), never scans.
Writes touch only the synced attributes: new records in batches of PutItem, existing ones
with an UpdateItem that SETs changed values and REMOVEs emptied ones, so every attribute Active
owns (role, notes, modules, ...) survives.

New records' batches are written by a few threads while the run maps the next records
(``BatchWrites``): a first sync of a large practice is thousands of BatchWriteItem calls, each
mostly waiting on the network, and the mapping is CPU.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from botocore.exceptions import ClientError

from xpm_sync.adapters.dynamodb import BATCH_SIZE, Table, error_code, is_condition_failure, update_expression
from xpm_sync.domain.active_records import Office

SyncedValues = Mapping[str, object]
_TRANSACTION_REFUSED = frozenset({"TransactionCanceledException", "TransactionConflictException"})
WRITER_THREADS = 4  # BatchWriteItem requests in flight at once; twice as many may wait (bounded memory)


class BatchWrites:
    """PutItems sent 25 to a BatchWriteItem by a few threads, while the caller prepares the next
    items: each request mostly waits on the network. Items are written in no particular order, so
    they must not depend on each other. ``flush`` waits for every write and raises the first
    failure; no thread outlives it."""

    def __init__(self, table: Table, *, writers: int = WRITER_THREADS) -> None:
        self._table = table
        self._writers = writers
        self._pending: list[dict[str, Any]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: set[Future[None]] = set()

    def put(self, item: dict[str, Any]) -> None:
        self._pending.append(item)
        if len(self._pending) >= BATCH_SIZE:
            self._send_pending()

    def _send_pending(self) -> None:
        # A failed write stops the caller here; the batch stays pending for ``flush``.
        finished = {write for write in self._in_flight if write.done()}
        self._in_flight -= finished
        _raise_first_failure(finished)
        while len(self._in_flight) >= 2 * self._writers:
            finished, self._in_flight = wait(self._in_flight, return_when=FIRST_COMPLETED)
            _raise_first_failure(finished)
        self._submit_pending()

    def _submit_pending(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._writers, thread_name_prefix="active-writes")
        batch, self._pending = self._pending, []
        self._in_flight.add(self._pool.submit(self._write, batch))

    def _write(self, items: list[dict[str, Any]]) -> None:
        # The batch writer sends again the items DynamoDB leaves unprocessed.
        with self._table.batch_writer() as batch:
            for item in items:
                batch.put_item(Item=item)

    def flush(self) -> None:
        """Write what is still buffered, wait for every write in flight and stop the threads;
        the first failed write is raised (after all the others have ended)."""
        try:
            if self._pending:
                self._submit_pending()
            finished, _ = wait(self._in_flight)
            self._in_flight = set()
            _raise_first_failure(finished)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


class RecordIds:
    """Fresh random (version 4) UUIDs, drawn from ``os.urandom`` 256 at a time.

    Each ``os.urandom`` call releases the GIL; while the writer threads are busy, the thread that
    maps records then waits to get it back, once per record: 0.25 ms a record here, against
    under 1 µs for the call itself. One call per 256 ids takes that wait out of the loop.
    """

    _BATCH = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""

    def new(self) -> str:
        with self._lock:
            if not self._pool:
                self._pool = os.urandom(16 * self._BATCH)
            drawn, self._pool = self._pool[:16], self._pool[16:]
        return str(uuid.UUID(bytes=drawn, version=4))


class RecordGone(Exception):
    """The record was deleted in Active while the run was going; the sync does not bring it back."""


class OfficeGone(Exception):
    """The office was deleted between the check and the write."""


class ActiveRepository:
    """One firm's slice of the Active table: the keys of SPEC B3 are written here and nowhere else."""

    def __init__(self, table: Table, firm_id: str, *, writers: int = WRITER_THREADS) -> None:
        self._table = table
        self.firm_id = firm_id
        self._pk = f"FIRM#{firm_id}"
        self._new_records = BatchWrites(table, writers=writers)
        self._ids = RecordIds()

    def _query(self, prefix: str) -> Iterator[dict[str, Any]]:
        return self._table.query_items(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": self._pk, ":prefix": prefix},
        )

    def _item(self, sk: str) -> dict[str, Any] | None:
        item = self._table.get_item(Key={"pk": self._pk, "sk": sk}, ConsistentRead=True).get("Item")
        return item if isinstance(item, dict) else None

    def office(self, code: str) -> dict[str, Any] | None:
        return self._item(f"OFFICE#{code}")

    def user(self, user_id: str) -> dict[str, Any] | None:
        return self._item(f"USER#{user_id}")

    def user_exists(self, user_id: str) -> bool:
        return self.user(user_id) is not None

    def default_partner(self, office_code: str | None) -> str | None:
        office = self.office(office_code) if office_code else None
        value = office.get("default_partner_user_id") if office else None
        return value if isinstance(value, str) else None

    def set_default_partner(self, office_code: str, user_id: str | None) -> None:
        """The office's Default Partner (SPEC A2: the setup page writes the same attribute as
        Admin Centre -> Office); ``None`` clears it. Never creates an office."""
        try:
            self._table.update_item(
                Key={"pk": self._pk, "sk": f"OFFICE#{office_code}"},
                ConditionExpression="attribute_exists(pk)",
                **update_expression({"default_partner_user_id": user_id}),
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                raise OfficeGone(office_code) from None
            raise

    def offices(self) -> dict[str, Office]:
        return {
            str(item["code"]): Office(
                code=str(item["code"]),
                name=item.get("name"),
                default_partner_user_id=item.get("default_partner_user_id"),
            )
            for item in self._query("OFFICE#")
        }

    def users(self) -> list[dict[str, Any]]:
        """Every user item of the firm, as stored."""
        return list(self._query("USER#"))

    def clients(self) -> list[dict[str, Any]]:
        """Every client item of the firm, as stored."""
        return list(self._query("CLIENT#"))

    def create(self, entity: str, values: SyncedValues, **owned_at_creation: str) -> str:
        """A new record with a fresh id; ``owned_at_creation`` are Active attributes set once
        (a client's ``office_code``) that the sync never changes afterwards."""
        record_id = self._ids.new()
        item: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
        item.update(owned_at_creation)
        item.update(
            {
                "pk": self._pk,
                "sk": f"{entity.upper()}#{record_id}",
                "firm_id": self.firm_id,
                "entity": entity,
                f"{entity}_id": record_id,
            }
        )
        # New records go out 25 to a request; the fresh uuid4 in the key means nothing can be
        # overwritten, so no condition is needed (nor any order between requests). ``flush``
        # before the run is recorded.
        self._new_records.put(item)
        return record_id

    def flush(self) -> None:
        """Write the new records still buffered and wait for them (BatchWrites.flush)."""
        self._new_records.flush()

    def update(self, entity: str, record_id: str, changes: SyncedValues) -> None:
        """SET the changed synced values and REMOVE the ones XPM emptied; nothing else."""
        expression = update_expression(changes)
        if not expression:
            return
        try:
            self._table.update_item(
                Key={"pk": self._pk, "sk": f"{entity.upper()}#{record_id}"},
                # Never resurrect a record Active deleted while the run was going.
                ConditionExpression="attribute_exists(pk)",
                **expression,
            )
        except ClientError as error:
            if not is_condition_failure(error):
                raise
            raise RecordGone(f"{entity} {record_id} no longer exists in Active") from error

    def set_codes(self, entity: str, codes: Sequence[tuple[str, str]]) -> bool:
        """Set the ``code`` of several records in one transaction: codes that move between them
        (swapped in XPM) are never held by two at once. False, with nothing written, when a
        record is gone or the transaction was refused."""
        updates = [
            {
                "Key": {"pk": self._pk, "sk": f"{entity.upper()}#{record_id}"},
                "UpdateExpression": "SET #code = :code",
                "ExpressionAttributeNames": {"#code": "code"},
                "ExpressionAttributeValues": {":code": code},
                "ConditionExpression": "attribute_exists(pk)",
            }
            for record_id, code in codes
        ]
        try:
            self._table.transact_updates(updates)
        except ClientError as error:
            if error_code(error) in _TRANSACTION_REFUSED:
                return False
            raise
        return True


def _raise_first_failure(writes: Iterable[Future[None]]) -> None:
    for write in writes:
        error = write.exception()
        if error is not None:
            raise error


def changed_values(stored: Mapping[str, Any], desired: SyncedValues) -> dict[str, object]:
    """The synced attributes whose stored value differs from the desired one (None = remove)."""
    changes: dict[str, object] = {}
    for name, value in desired.items():
        current = stored.get(name)
        if value is None:
            if current is not None:
                changes[name] = None
        elif current != value:
            changes[name] = value
    return changes
