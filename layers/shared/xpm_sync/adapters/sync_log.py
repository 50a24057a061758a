"""The sync log table (SPEC B3): runs and their error logs (kept 90 days), and the state the sync
keeps per record (open problems and the copies failed records are retried from; kept until closed).

Layout (``pk`` / ``sk``); nothing here grows with the firm in one item:

- a run: ``FIRM#{firm}`` / ``RUN#{run_id}``. Run ids start with their UTC start time, so a
  reverse query lists runs newest first.
- its entries: ``RUN#{firm}#{run_id}`` / ``ENTRY#{E|W}#{n}``: errors sort before warnings, each in
  the order found, so a page of the log is one query and can never reach another firm's data.
- a record's open problems and retry copy: ``STATE#{firm}`` / ``{entity}#{uuid}`` (no TTL).
- a problem fixed since: ``FIXED#{firm}`` / ``{closed_at}#{record}#{code}`` (90 days).
- a suggested link and the admin's answer: ``MATCH#{firm}`` / ``{xpm_uuid}`` (no TTL).
- an Active client with no link to XPM, as the last full read found it: ``UNLINKED#{firm}`` /
  ``{client_id}`` (no TTL): where an incremental run looks for suggested links.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from xpm_sync.adapters.cursors import CursorSigner
from xpm_sync.adapters.dynamodb import (
    MAX_ITEM_BYTES,
    Table,
    item_size,
    update_expression,
)
from xpm_sync.domain.active_records import StoredClient
from xpm_sync.domain.clock import Clock, parse_iso
from xpm_sync.domain.entries import Entry, Severity
from xpm_sync.domain.errors import InvalidCursor
from xpm_sync.domain.near_match import Suggestion
from xpm_sync.domain.problems import ClosedProblem, Problem, RecordState
from xpm_sync.domain.runs import RUN_RETENTION, SyncRun

ENTRIES_PAGE = 100
_SEVERITY_RANK: Mapping[str, str] = {"error": "E", "warning": "W"}
# A query reads this many items at a time while a filtered page fills (DynamoDB caps it at 1 MB).
_QUERY_BATCH = 500


def plain(value: Any) -> Any:
    """DynamoDB returns numbers as Decimal; the models want ints."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "as_integer_ratio") and not isinstance(value, bool | int | float):
        return int(value)
    return value


def expiry(now: datetime) -> int:
    return int((now + RUN_RETENTION).timestamp())


def run_expiry(run: SyncRun) -> int:
    """When a run and every entry of its log expire: 90 days from its start, one moment for all of
    them, so a run in parts is never listed with the entries of its earlier parts already gone."""
    return expiry(parse_iso(run.started_at))


# DynamoDB deletes an item past its TTL late (a day or two after it): a reader that shows what is
# kept for 90 days compares the stored expiry with the clock rather than count on the item's
# absence (the notify table's allowance does the same, SPEC A5).
_UNEXPIRED = "(attribute_not_exists(expires_at) OR expires_at > :now)"


class _Expiring:
    """What the readers of items with a TTL share: the clock they compare ``expires_at`` with. No
    clock (the worker's own bookkeeping) reads every stored item, expired or not."""

    def __init__(self, clock: Clock | None) -> None:
        self._clock = clock

    def _unexpired(
        self, expression: str | None, values: Mapping[str, Any] | None
    ) -> tuple[str | None, dict[str, Any]]:
        """``expression`` (and its values) narrowed to items not past their expiry."""
        if self._clock is None:
            return expression, dict(values or {})
        narrowed = f"({expression}) AND {_UNEXPIRED}" if expression else _UNEXPIRED
        return narrowed, {**(values or {}), ":now": int(self._clock.now().timestamp())}

    def _expired(self, item: Mapping[str, Any]) -> bool:
        expires_at = item.get("expires_at")
        return (
            self._clock is not None
            and expires_at is not None
            and int(expires_at) <= int(self._clock.now().timestamp())
        )


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_after: str | None  # the sort key the next page starts after


def query_page(
    table: Table,
    *,
    pk: str,
    prefix: str,
    after: str | None,
    limit: int,
    filter_expression: str | None = None,
    filter_values: Mapping[str, Any] | None = None,
    filter_names: Mapping[str, str] | None = None,
    newest_first: bool = False,
    projection: str | None = None,
) -> Page:
    """At most ``limit`` items of one partition whose sort key starts with ``prefix``, after the sort
    key ``after``; a filter may leave some out. The next page starts after the last item returned,
    so a page is exact whatever the filter keeps."""
    key_values = {":pk": pk, ":prefix": prefix} if prefix else {":pk": pk}
    request: dict[str, Any] = {
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)" if prefix else "pk = :pk",
        "ExpressionAttributeValues": {**key_values, **(filter_values or {})},
        "ScanIndexForward": not newest_first,
        # One more than the page: whether a next page exists is then known without another read.
        "Limit": limit + 1,
    }
    if filter_expression:
        request["FilterExpression"] = filter_expression
    if filter_names:
        request["ExpressionAttributeNames"] = dict(filter_names)
    if projection:
        request["ProjectionExpression"] = projection
    if after is not None:
        request["ExclusiveStartKey"] = {"pk": pk, "sk": after}
    found: list[dict[str, Any]] = []
    while True:
        answer = table.query(**request)
        found.extend(answer.get("Items", []))
        if len(found) > limit:
            return Page(found[:limit], str(found[limit - 1]["sk"]))
        if "LastEvaluatedKey" not in answer:
            return Page(found, None)
        request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        # A filter that keeps few items: read more of them at a time (DynamoDB stops at 1 MB).
        request["Limit"] = min(request["Limit"] * 2, _QUERY_BATCH)


class RunLog(_Expiring):
    """Writes and reads runs and their entries; with a ``clock``, reads leave out what is past its
    90 days."""

    def __init__(self, table: Table, cursors: CursorSigner | None = None, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._table = table
        self._cursors = cursors

    def save_run(self, run: SyncRun, now: datetime) -> None:
        item = run.model_dump(exclude_none=True)
        item.update(pk=f"FIRM#{run.firm_id}", sk=f"RUN#{run.run_id}", expires_at=run_expiry(run))
        self._table.put_item(Item=item)

    def add_entries(self, run: SyncRun, entries: Iterable[Entry], now: datetime, *, start: int = 0) -> int:
        """Append entries after the ``start`` already written; returns the new total."""
        count = start
        expires_at = run_expiry(run)
        with self._table.batch_writer() as batch:
            for entry in entries:
                item = entry.model_dump(exclude_none=True)
                item.update(
                    pk=f"RUN#{run.firm_id}#{run.run_id}",
                    sk=f"ENTRY#{_SEVERITY_RANK[entry.severity]}#{count:07d}",
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
        return SyncRun.model_validate(plain(item)) if item and not self._expired(item) else None

    def entries(self, firm_id: str, run_id: str) -> list[Entry]:
        """Every entry of a run, errors first (for tests and tools; the API pages them)."""
        return [
            Entry.model_validate(item)
            for item in self._table.query_items(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :entries)",
                ExpressionAttributeValues={":pk": f"RUN#{firm_id}#{run_id}", ":entries": "ENTRY#"},
            )
        ]

    def _signer(self) -> CursorSigner:
        if self._cursors is None:
            raise RuntimeError("paging needs a cursor signer")
        return self._cursors

    def entries_page(
        self,
        firm_id: str,
        run_id: str,
        *,
        cursor: str | None = None,
        severity: Severity | None = None,
        code: str | None = None,
        limit: int = ENTRIES_PAGE,
    ) -> tuple[list[Entry], str | None]:
        """A page of a run's error log, errors first, optionally of one severity or code."""
        scope = {
            "list": "entries",
            "firm": firm_id,
            "run": run_id,
            "severity": severity or "",
            "code": code or "",
        }
        after = self._signer().decode(cursor, scope) if cursor else None
        filter_expression, filter_values = self._unexpired(
            "#code = :code" if code else None, {":code": code} if code else None
        )
        page = query_page(
            self._table,
            pk=f"RUN#{firm_id}#{run_id}",
            prefix=f"ENTRY#{_SEVERITY_RANK[severity]}#" if severity else "ENTRY#",
            after=after,
            limit=limit,
            filter_expression=filter_expression,
            filter_names={"#code": "code"} if code else None,
            filter_values=filter_values,
        )
        next_cursor = self._signer().encode(scope, page.next_after) if page.next_after else None
        return [Entry.model_validate(item) for item in page.items], next_cursor

    def list_runs(
        self, firm_id: str, *, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[SyncRun], str | None]:
        """Newest first, ``limit`` at a time; the cursor is opaque to callers."""
        scope = {"list": "runs", "firm": firm_id}
        after = self._signer().decode(cursor, scope) if cursor else None
        if after is not None and not after.startswith("RUN#"):
            raise InvalidCursor()
        filter_expression, filter_values = self._unexpired(None, None)
        page = query_page(
            self._table,
            pk=f"FIRM#{firm_id}",
            prefix="RUN#",
            after=after,
            limit=limit,
            newest_first=True,
            filter_expression=filter_expression,
            filter_values=filter_values,
        )
        runs = [SyncRun.model_validate(plain(item)) for item in page.items]
        next_cursor = self._signer().encode(scope, page.next_after) if page.next_after else None
        return runs, next_cursor

    def latest_sync(self, firm_id: str) -> SyncRun | None:
        """The newest run that is not a preview, finished or not: a dry run changes no sync state
        (SPEC B6), so it is never the firm's last run."""
        not_dry, values = self._unexpired(
            "attribute_not_exists(dry_run) OR dry_run = :not_dry",
            {":pk": f"FIRM#{firm_id}", ":runs": "RUN#", ":not_dry": False},
        )
        newest_first = self._table.query_items(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :runs)",
            FilterExpression=not_dry,
            ExpressionAttributeValues=values,
            ScanIndexForward=False,
            # Pages of a few runs, read only until the first that is not a preview.
            Limit=10,
        )
        latest = next(iter(newest_first), None)
        return SyncRun.model_validate(plain(latest)) if latest is not None else None


# --- Per-record state: open problems and retry copies (SPEC A7, B6) ------------------------------


def _state_item(firm_id: str, state: RecordState) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": f"STATE#{firm_id}",
        "sk": state.key,
        "firm_id": firm_id,
        "kind": "record_state",
        "entity": state.entity,
        "label": state.label,
        "problems": [
            {
                "code": p.code,
                "severity": p.severity,
                "message": p.message,
                "suggestion": p.suggestion,
                "first_seen": p.first_seen,
                "last_seen": p.last_seen,
                "runs": p.runs,
                **({"opened_at": p.opened_at} if p.opened_at is not None else {}),
            }
            for p in state.problems
        ],
        "xpm_uuid": state.xpm_uuid,
        "web_url": state.web_url,
        "retry_copy": state.retry_copy,
        "seen_run": state.seen_run,
    }
    if state.problems:
        item["codes"] = {p.code for p in state.problems}
    return {name: value for name, value in item.items() if value is not None}


def _state_of(item: Mapping[str, Any]) -> RecordState:
    return RecordState(
        entity=item["entity"],
        key=str(item["sk"]),
        label=str(item.get("label", "")),
        problems=tuple(
            Problem(
                code=str(p["code"]),
                severity=p["severity"],
                message=str(p["message"]),
                suggestion=str(p["suggestion"]),
                first_seen=str(p["first_seen"]),
                last_seen=str(p["last_seen"]),
                runs=int(p["runs"]),
                opened_at=p.get("opened_at"),
            )
            for p in item.get("problems", [])
        ),
        xpm_uuid=item.get("xpm_uuid"),
        web_url=item.get("web_url"),
        retry_copy=item.get("retry_copy"),
        seen_run=item.get("seen_run"),
    )


# What an open problem looks like to the API, and what the summary needs of it.
_PROBLEM_PROJECTION = "sk, #entity, label, problems, xpm_uuid, web_url, codes"


class RecordStates(_Expiring):
    """One firm's record states (``STATE#``) and fixed problems (``FIXED#``); with a ``clock``,
    fixed problems past their 90 days are left out."""

    def __init__(
        self, table: Table, firm_id: str, cursors: CursorSigner | None = None, clock: Clock | None = None
    ) -> None:
        super().__init__(clock)
        self._table = table
        self._firm_id = firm_id
        self._cursors = cursors

    def load(self, *, with_copies: bool = True) -> dict[str, RecordState]:
        """Every open state of the firm (as many as records with something open, never the firm)."""
        request: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": f"STATE#{self._firm_id}"},
        }
        if not with_copies:
            request["ProjectionExpression"] = f"{_PROBLEM_PROJECTION}, seen_run"
            request["ExpressionAttributeNames"] = {"#entity": "entity"}
        return {str(item["sk"]): _state_of(item) for item in self._table.query_items(**request)}

    def get(self, key: str) -> RecordState | None:
        """One record's open state (``RUN_KEY`` for the run-level problems), or None."""
        item = self._table.get_item(Key={"pk": f"STATE#{self._firm_id}", "sk": key}).get("Item")
        return _state_of(item) if item else None

    def write(
        self,
        puts: Iterable[RecordState],
        deletes: Iterable[str],
        fixed: Iterable[ClosedProblem],
        now: datetime,
    ) -> None:
        """Save changed states, drop closed ones and record what was fixed, 25 to a request."""
        expires_at = expiry(now)
        with self._table.batch_writer() as batch:
            for state in puts:
                item = _state_item(self._firm_id, state)
                if item_size(item) > MAX_ITEM_BYTES and state.retry_copy is not None:
                    # A copy that alone fills an item cannot be kept: the record is retried when XPM
                    # sends it again (changed), as RECORD_TOO_LARGE records are.
                    item = _state_item(self._firm_id, replace(state, retry_copy=None))
                batch.put_item(Item=item)
            for key in deletes:
                batch.delete_item(Key={"pk": f"STATE#{self._firm_id}", "sk": key})
            for closed in fixed:
                batch.put_item(
                    Item={
                        "pk": f"FIXED#{self._firm_id}",
                        "sk": f"{closed.closed_at}#{closed.key}#{closed.code}",
                        "firm_id": self._firm_id,
                        "kind": "fixed_problem",
                        "entity": closed.entity,
                        "code": closed.code,
                        "label": closed.label,
                        **({"xpm_uuid": closed.xpm_uuid} if closed.xpm_uuid else {}),
                        "expires_at": expires_at,
                    }
                )

    def open_page(
        self, *, cursor: str | None, code: str | None, entity: str | None, limit: int
    ) -> tuple[list[RecordState], str | None, str | None]:
        """States with an open problem of ``code`` / ``entity``, ``limit`` states at a time, and the
        next cursor (and the position the page started after)."""
        scope = {"list": "problems", "firm": self._firm_id, "code": code or "", "entity": entity or ""}
        signer = self._signer()
        after = signer.decode(cursor, scope) if cursor else None
        filters: list[str] = []
        values: dict[str, Any] = {}
        names: dict[str, str] = {}
        if code:
            filters.append("contains(codes, :code)")
            values[":code"] = code
        if entity:
            filters.append("#entity = :entity")
            values[":entity"] = entity
            names["#entity"] = "entity"
        filters.append("attribute_exists(codes)")
        page = query_page(
            self._table,
            pk=f"STATE#{self._firm_id}",
            prefix="",
            after=after,
            limit=limit,
            filter_expression=" AND ".join(filters),
            filter_values=values,
            filter_names={**names, "#entity": "entity"},
            projection=_PROBLEM_PROJECTION,
        )
        next_cursor = signer.encode(scope, page.next_after) if page.next_after else None
        return [_state_of(item) for item in page.items], after, next_cursor

    def every_open(self) -> Iterator[RecordState]:
        """Every state with an open problem, without the copies (the summary reads these)."""
        for item in self._table.query_items(
            KeyConditionExpression="pk = :pk",
            FilterExpression="attribute_exists(codes)",
            ExpressionAttributeValues={":pk": f"STATE#{self._firm_id}"},
            ExpressionAttributeNames={"#entity": "entity"},
            ProjectionExpression=_PROBLEM_PROJECTION,
        ):
            yield _state_of(item)

    def fixed_after(self, moment: str | None) -> Iterator[ClosedProblem]:
        """Each problem closed strictly after ``moment`` (ISO 8601 UTC; None: in the last 90 days),
        oldest first, with what the summary shows of it (code, label, entity), never more.

        The run that sends an email closes its problems at the very moment the engine then stores
        as ``last_notified_at``; that email already counted them, so they are not "after" it. Their
        sort keys are ``{moment}#...``, and ``$`` follows ``#``: the query starts past them all.
        """
        request: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND sk > :after" if moment else "pk = :pk",
            "ExpressionAttributeValues": {":pk": f"FIXED#{self._firm_id}"},
            "ExpressionAttributeNames": {"#entity": "entity", "#code": "code"},
            "ProjectionExpression": "sk, #entity, #code, label, xpm_uuid",
        }
        if moment:
            request["ExpressionAttributeValues"][":after"] = f"{moment}$"
        unexpired, values = self._unexpired(None, request["ExpressionAttributeValues"])
        if unexpired:
            request.update(FilterExpression=unexpired, ExpressionAttributeValues=values)
        for item in self._table.query_items(**request):
            sort_key, code = str(item["sk"]), str(item["code"])
            closed_at, _, rest = sort_key.partition("#")
            yield ClosedProblem(
                entity=item["entity"],
                key=rest.removesuffix(f"#{code}"),
                code=code,
                label=str(item.get("label", "")),
                closed_at=closed_at,
                xpm_uuid=item.get("xpm_uuid"),
            )

    def _signer(self) -> CursorSigner:
        if self._cursors is None:
            raise RuntimeError("paging needs a cursor signer")
        return self._cursors


# --- Suggested links and the unlinked clients they are found among (SPEC B6) -------------------


def _suggestion_of(item: Mapping[str, Any]) -> Suggestion:
    answer = item.get("answer")
    return Suggestion(
        xpm_uuid=str(item["sk"]),
        label=str(item.get("label", "")),
        client_id=str(item["client_id"]),
        client_label=str(item.get("client_label", "")),
        reason=item["reason"],
        answer=answer if answer in ("link", "create") else None,
        suggested_client_id=_text_or_none(item.get("suggested_client_id")),
        suggested_client_label=_text_or_none(item.get("suggested_client_label")),
    )


def _text_or_none(value: Any) -> str | None:
    return str(value) if value else None


class Matches:
    """One firm's suggested links (``MATCH#``) and unlinked Active clients (``UNLINKED#``)."""

    def __init__(self, table: Table, firm_id: str, cursors: CursorSigner | None = None) -> None:
        self._table = table
        self._firm_id = firm_id
        self._cursors = cursors
        self._pk = f"MATCH#{firm_id}"

    def load(self) -> dict[str, Suggestion]:
        return {
            str(item["sk"]): _suggestion_of(item)
            for item in self._table.query_items(
                KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": self._pk}
            )
        }

    def get(self, xpm_uuid: str) -> Suggestion | None:
        item = self._table.get_item(Key={"pk": self._pk, "sk": xpm_uuid}, ConsistentRead=True).get("Item")
        return _suggestion_of(item) if item else None

    def suggest(self, suggestion: Suggestion) -> None:
        """Keep a new suggestion, awaiting the admin's answer."""
        self._table.put_item(
            Item={
                "pk": self._pk,
                "sk": suggestion.xpm_uuid,
                "firm_id": self._firm_id,
                "kind": "match",
                "label": suggestion.label,
                "client_id": suggestion.client_id,
                "client_label": suggestion.client_label,
                "reason": suggestion.reason,
            }
        )

    def answer(self, answered: Suggestion) -> bool:
        """Keep the admin's answer with the Active client it names; False, with nothing written,
        when there is no such suggestion any more (a run applied it meanwhile)."""
        return self._table.update_item_if(
            Key={"pk": self._pk, "sk": answered.xpm_uuid},
            ConditionExpression="attribute_exists(pk)",
            **update_expression(
                {
                    "answer": answered.answer,
                    "client_id": answered.client_id,
                    "client_label": answered.client_label,
                    "suggested_client_id": answered.suggested_client_id,
                    "suggested_client_label": answered.suggested_client_label,
                }
            ),
        )

    def forget(self, xpm_uuids: Iterable[str]) -> None:
        with self._table.batch_writer() as batch:
            for xpm_uuid in xpm_uuids:
                batch.delete_item(Key={"pk": self._pk, "sk": xpm_uuid})

    def page(self, cursor: str | None, limit: int) -> tuple[list[Suggestion], str | None]:
        scope = {"list": "matches", "firm": self._firm_id}
        signer = self._cursors
        if signer is None:
            raise RuntimeError("paging needs a cursor signer")
        after = signer.decode(cursor, scope) if cursor else None
        page = query_page(self._table, pk=self._pk, prefix="", after=after, limit=limit)
        next_cursor = signer.encode(scope, page.next_after) if page.next_after else None
        return [_suggestion_of(item) for item in page.items], next_cursor

    # The unlinked Active clients, as the last full read found them.

    def unlinked(self) -> list[StoredClient]:
        return [
            StoredClient(
                client_id=str(item["sk"]),
                synced={k: item[k] for k in ("legal_name", "abn", "code") if item.get(k)},
            )
            for item in self._table.query_items(
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": f"UNLINKED#{self._firm_id}"},
            )
        ]

    def replace_unlinked(self, now_unlinked: Iterable[StoredClient], before: Iterable[StoredClient]) -> None:
        current = {client.client_id: client for client in now_unlinked}
        previous = {client.client_id: client for client in before}
        with self._table.batch_writer() as batch:
            for client_id, client in current.items():
                if previous.get(client_id) != client:
                    batch.put_item(
                        Item={
                            "pk": f"UNLINKED#{self._firm_id}",
                            "sk": client_id,
                            "firm_id": self._firm_id,
                            "kind": "unlinked_client",
                            **{k: v for k, v in client.synced.items() if k in ("legal_name", "abn", "code")},
                        }
                    )
            for client_id in previous.keys() - current.keys():
                batch.delete_item(Key={"pk": f"UNLINKED#{self._firm_id}", "sk": client_id})

    def drop_unlinked(self, client_ids: Iterable[str]) -> None:
        """Clients found linked (or gone) since the last full read: no longer look-alike candidates."""
        with self._table.batch_writer() as batch:
            for client_id in set(client_ids):
                batch.delete_item(Key={"pk": f"UNLINKED#{self._firm_id}", "sk": client_id})
