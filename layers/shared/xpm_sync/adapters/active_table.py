"""The Active table (SPEC B3), as far as the sync and the setup page may touch it.

Reads are by key: one partition query per entity for a full read (``pk=FIRM#{firm_id}``, ``sk``
prefix), and for an incremental run only the clients its XPM answer concerns, never a scan. A
client the sync creates takes an id derived from its XPM UUID (``linked_client_id``), so a later
run finds it by key, 100 to a BatchGetItem; a client linked otherwise (entered by hand, created
before ids were derived, relinked) is found through the ``by_xpm_uuid`` index (template.yaml), a
query each, and codes through ``by_code``. Writes touch only the synced attributes: new records in
batches of PutItem, existing ones with an update that SETs changed values and REMOVEs emptied ones
(only if the record still exists), so every attribute Active owns (role, notes, modules, ...)
survives.
An item DynamoDB would refuse for its size is refused here first (``RecordTooLarge``), so it never
takes a batch of other records down with it.

New records' batches are written by a few threads while the run maps the next records
(``BatchWrites``): a first sync of a large practice is thousands of BatchWriteItem calls, each
mostly waiting on the network, and the mapping is CPU. Updates an incremental run sends on
(``update_soon``) go out up to 100 to a TransactWriteItems, each with its own condition, so 500
changed clients are 5 requests, not 500 (a request's own cost, in Lambda's CPU and in latency,
is most of a small update's); a transaction DynamoDB refuses is written again one update at a time,
so each record gets its own answer.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from botocore.exceptions import ClientError

from xpm_sync.adapters.dynamodb import (
    BATCH_SIZE,
    MAX_ITEM_BYTES,
    Table,
    error_code,
    is_condition_failure,
    item_size,
    update_expression,
)
from xpm_sync.domain.active_records import Office, StoredClient, StoredUser, SyncedValues
from xpm_sync.domain.errors import RecordGone, RecordTooLarge

_TRANSACTION_REFUSED = frozenset({"TransactionCanceledException", "TransactionConflictException"})
# Why DynamoDB may refuse a transaction of updates that one at a time might pass (or fail alone).
_UPDATES_REFUSED_TOGETHER = _TRANSACTION_REFUSED | {"ValidationException"}
MAX_INDEX_KEY_BYTES = 1024  # DynamoDB's longest sort key, of a table or of an index
UPDATES_PER_TRANSACTION = 100  # DynamoDB's most items per TransactWriteItems
_TRANSACTION_BYTES = 2 * 1024 * 1024  # changes sent in one transaction, well under its 4 MB
WRITER_THREADS = 4  # BatchWriteItem requests in flight at once; twice as many may wait (bounded memory)
LOOKUP_THREADS = 8  # index queries in flight at once while an incremental run looks records up
# Names the ids of clients the sync creates (uuid5 of the XPM UUID): fixed, or no id is found again.
_LINKED_CLIENT_IDS = uuid.UUID("1f04abb6-e495-4989-ad4f-73316a7ea81f")


def code_spellings(code: str) -> set[str]:
    """The spellings of a code an index lookup tries: as sent, upper case, lower case, capitalised
    and title case, the ways a code is typed by hand. The index matches exactly, so other mixes of
    case are found only by the daily full read, which ignores case."""
    return {code, code.upper(), code.lower(), code.capitalize(), code.title()}


def linked_client_id(xpm_uuid: str) -> str:
    """The id the sync gives the Active client it creates for this XPM client, when it is free."""
    return str(uuid.uuid5(_LINKED_CLIENT_IDS, xpm_uuid))


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


class QueuedUpdate(Future[None]):
    """An update waiting for its transaction; asking for its outcome sends what is waiting, so
    nobody waits on an update that was never sent."""

    def __init__(self, send_queued: Callable[[], None]) -> None:
        super().__init__()
        self._send_queued = send_queued

    def result(self, timeout: float | None = None) -> None:
        self._send_queued()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._send_queued()
        return super().exception(timeout)


_Update = tuple[str, str, SyncedValues, QueuedUpdate]


def write_each(
    updates: Iterable[tuple[str, str, SyncedValues, Future[None]]],
    update: Callable[[str, str, SyncedValues], None],
) -> None:
    """Write queued updates one at a time, each answered with its own outcome."""
    for entity, record_id, changes, answer in updates:
        try:
            update(entity, record_id, changes)
        except Exception as error:
            answer.set_exception(error)
        else:
            answer.set_result(None)


class OfficeGone(Exception):
    """The office was deleted between the check and the write."""


class ActiveRepository:
    """One firm's slice of the Active table: the keys of SPEC B3 are written here and nowhere else."""

    def __init__(self, table: Table, firm_id: str, *, writers: int = WRITER_THREADS) -> None:
        self._table = table
        self.firm_id = firm_id
        self._pk = f"FIRM#{firm_id}"
        self._new_records = BatchWrites(table, writers=writers)
        self._writers = writers
        self._updates: ThreadPoolExecutor | None = None
        self._queued: list[_Update] = []
        self._queued_bytes = 0
        self._queue_lock = threading.Lock()
        self._ids = RecordIds()
        # Client ids this repository has seen held, or read free: a derived id is given to a new
        # client only when it is known free, so a relinked client under it is never overwritten.
        self._client_ids_held: set[str] = set()
        self._client_ids_free: set[str] = set()
        self._every_client_read = False

    def _query(self, prefix: str) -> Iterator[dict[str, Any]]:
        # Consistent: a full read tells which derived ids are free, and a client this firm's run
        # created a moment before (a run's earlier part) must be seen.
        return self._table.query_items(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": self._pk, ":prefix": prefix},
            ConsistentRead=True,
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
        if not self._table.update_item_if(
            Key={"pk": self._pk, "sk": f"OFFICE#{office_code}"},
            ConditionExpression="attribute_exists(pk)",
            **update_expression({"default_partner_user_id": user_id}),
        ):
            raise OfficeGone(office_code)

    def offices(self) -> dict[str, Office]:
        return {
            str(item["code"]): Office(
                code=str(item["code"]),
                name=item.get("name"),
                default_partner_user_id=item.get("default_partner_user_id"),
            )
            for item in self._query("OFFICE#")
        }

    def users(self) -> list[StoredUser]:
        """Every user of the firm (the staff list is read whole every run, so are the users)."""
        return [StoredUser.from_item(item) for item in self._query("USER#")]

    def clients(self) -> list[StoredClient]:
        """Every client of the firm: the first sync and the daily full read only."""
        found = [StoredClient.from_item(item) for item in self._query("CLIENT#")]
        self._client_ids_held.update(client.client_id for client in found)
        self._every_client_read = True
        return found

    def client(self, client_id: str) -> StoredClient | None:
        item = self._item(f"CLIENT#{client_id}")
        return StoredClient.from_item(item) if item is not None else None

    def clients_by_uuid(self, xpm_uuids: Collection[str]) -> list[StoredClient]:
        """The clients linked to these XPM UUIDs: by key where the sync created them, by the
        ``by_xpm_uuid`` index for the others."""
        uuid_of = {linked_client_id(xpm_uuid): xpm_uuid for xpm_uuid in xpm_uuids if xpm_uuid}
        held = [
            StoredClient.from_item(item)
            for item in self._table.get_items([{"pk": self._pk, "sk": f"CLIENT#{id_}"} for id_ in uuid_of])
        ]
        self._client_ids_held.update(client.client_id for client in held)
        self._client_ids_free.update(uuid_of.keys() - self._client_ids_held)
        linked = [client for client in held if client.xpm_uuid == uuid_of[client.client_id]]
        elsewhere = set(uuid_of.values()) - {client.xpm_uuid for client in linked}
        return linked + self._by_index("by_xpm_uuid", "xpm_uuid", elsewhere)

    def clients_by_code(self, codes: Collection[str]) -> list[StoredClient]:
        """The clients holding these codes (by the ``by_code`` index), in each of ``code_spellings``:
        the sync compares codes in any case, and a client entered by hand may differ."""
        spellings = {spelling for code in codes for spelling in code_spellings(code)}
        return self._by_index("by_code", "code", spellings)

    def _by_index(self, index: str, attribute: str, values: Collection[str]) -> list[StoredClient]:
        def lookup(value: str) -> list[dict[str, Any]]:
            return list(
                self._table.query_items(
                    IndexName=index,
                    KeyConditionExpression="pk = :pk AND #attribute = :value",
                    FilterExpression="#entity = :client",
                    ExpressionAttributeNames={"#attribute": attribute, "#entity": "entity"},
                    ExpressionAttributeValues={":pk": self._pk, ":value": value, ":client": "client"},
                )
            )

        # A value longer than an index key can be is held by no item, and DynamoDB would refuse
        # the query (and with it the run) rather than answer nothing.
        wanted = [value for value in values if value and len(value.encode("utf-8")) <= MAX_INDEX_KEY_BYTES]
        if len(wanted) <= 1:
            found = [item for value in wanted for item in lookup(value)]
        else:
            with ThreadPoolExecutor(max_workers=min(LOOKUP_THREADS, len(wanted))) as pool:
                found = [item for items in pool.map(lookup, wanted) for item in items]
        unique = {str(item["client_id"]): item for item in found}
        return [StoredClient.from_item(item) for item in unique.values()]

    def create(self, entity: str, values: SyncedValues, **owned_at_creation: str) -> str:
        """A new record with a fresh id (a client linked to XPM: its derived id, if known free);
        ``owned_at_creation`` are Active attributes set once (a client's ``office_code``) that the
        sync never changes afterwards."""
        record_id = self._new_id(entity, values.get("xpm_uuid"))
        item = self._fitting_item(entity, record_id, values, owned_at_creation)
        # New records go out 25 to a request; the key is a fresh uuid4, or an id this run read free
        # (Active's own records never take derived ids), so nothing can be overwritten and no
        # condition is needed (nor any order between requests). ``flush`` before the run is recorded.
        self._new_records.put(item)
        return record_id

    def check_fits(self, entity: str, values: SyncedValues, **owned_at_creation: str) -> None:
        """Raises ``RecordTooLarge`` when a record holding ``values`` (and, for a new one, what
        :meth:`create` would set with them) could not be stored: a dry run plans writes it never
        makes, and reports what the real run would (SPEC B6)."""
        self._fitting_item(entity, str(uuid.UUID(int=0)), values, owned_at_creation)

    def _fitting_item(
        self, entity: str, record_id: str, values: SyncedValues, owned_at_creation: Mapping[str, str]
    ) -> dict[str, Any]:
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
        if item_size(item) > MAX_ITEM_BYTES:
            raise RecordTooLarge(f"a new {entity} of {item_size(item)} bytes")
        return item

    def _new_id(self, entity: str, xpm_uuid: object) -> str:
        if entity == "client" and isinstance(xpm_uuid, str) and xpm_uuid:
            derived = linked_client_id(xpm_uuid)
            free = derived in self._client_ids_free or (
                self._every_client_read and derived not in self._client_ids_held
            )
            if free:
                self._client_ids_free.discard(derived)
                self._client_ids_held.add(derived)
                return derived
        return self._ids.new()

    def flush(self) -> None:
        """Write the new records still buffered and wait for them (BatchWrites.flush), and for
        every update sent with ``update_soon``; no writer thread outlives it."""
        try:
            self._new_records.flush()
        finally:
            self._send_queued()
            if self._updates is not None:
                self._updates.shutdown(wait=True)
                self._updates = None

    def update_soon(self, entity: str, record_id: str, changes: SyncedValues) -> Future[None]:
        """:meth:`update`, sent with up to 99 others in one transaction by one of a few writer
        threads while the caller goes on (an incremental run's updates each mostly wait on the
        network). The future raises what ``update`` would; asking for it sends its transaction."""
        answer = QueuedUpdate(self._send_queued)
        size = item_size(changes)
        if not changes:
            answer.set_result(None)
        elif size > MAX_ITEM_BYTES:
            answer.set_exception(_too_large(entity, record_id, size))
        else:
            with self._queue_lock:
                if self._queued_bytes + size > _TRANSACTION_BYTES:
                    self._send_queued_locked()
                self._queued.append((entity, record_id, changes, answer))
                self._queued_bytes += size
                if len(self._queued) >= UPDATES_PER_TRANSACTION:
                    self._send_queued_locked()
        return answer

    def _send_queued(self) -> None:
        with self._queue_lock:
            self._send_queued_locked()

    def _send_queued_locked(self) -> None:
        batch, self._queued, self._queued_bytes = self._queued, [], 0
        if not batch:
            return
        try:
            if self._updates is None:
                self._updates = ThreadPoolExecutor(
                    max_workers=self._writers, thread_name_prefix="active-updates"
                )
            self._updates.submit(self._write_together, batch)
        except Exception as error:
            # No thread will answer them (none could start): nobody may wait on them for ever.
            for *_, answer in batch:
                answer.set_exception(error)
            raise

    def _write_together(self, batch: list[_Update]) -> None:
        # Every answer is set, whatever happens: the run waits on each.
        if len(batch) > 1:
            requests = [
                self._update_request(entity, record_id, changes) for entity, record_id, changes, _ in batch
            ]
            try:
                self._table.transact_updates(requests)
            except Exception as error:
                if not (isinstance(error, ClientError) and error_code(error) in _UPDATES_REFUSED_TOGETHER):
                    for *_, answer in batch:
                        answer.set_exception(error)
                    return
                # A record gone, one too large, or a write of Active's to one of them at the same
                # moment: one at a time, each record gets its own answer.
            else:
                for *_, answer in batch:
                    answer.set_result(None)
                return
        write_each(batch, self.update)

    def _update_request(self, entity: str, record_id: str, changes: SyncedValues) -> dict[str, Any]:
        return {
            "Key": {"pk": self._pk, "sk": f"{entity.upper()}#{record_id}"},
            # Never resurrect a record Active deleted while the run was going.
            "ConditionExpression": "attribute_exists(pk)",
            **update_expression(changes),
        }

    def update(self, entity: str, record_id: str, changes: SyncedValues) -> None:
        """SET the changed synced values and REMOVE the ones XPM emptied; nothing else."""
        if not changes:
            return
        if (size := item_size(changes)) > MAX_ITEM_BYTES:
            raise _too_large(entity, record_id, size)
        try:
            self._table.update_item(**self._update_request(entity, record_id, changes))
        except ClientError as error:
            if _is_size_refusal(error):
                # The item with Active's own attributes passes the limit: refused, as a new one is.
                raise RecordTooLarge(f"{entity} {record_id} would pass DynamoDB's item limit") from error
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


def _too_large(entity: str, record_id: str, size: int) -> RecordTooLarge:
    return RecordTooLarge(f"changes of {size} bytes to {entity} {record_id}")


def _is_size_refusal(error: ClientError) -> bool:
    message = str(error.response.get("Error", {}).get("Message", "")).lower()
    return error_code(error) == "ValidationException" and "size" in message
