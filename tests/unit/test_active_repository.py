"""The Active repository on DynamoDB (moto): new records written 25 to a request by a few threads,
updates 100 to a transaction, clients found by their derived key or through the indexes; nothing
lost, nothing overwritten, nothing left running, and a failed write reported."""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.adapters.active_table import ActiveRepository, OfficeGone, RecordIds, linked_client_id
from xpm_sync.adapters.dynamodb import Table, update_expression
from xpm_sync.domain.errors import RecordGone, RecordTooLarge

from tests.fixtures.aws import count_requests

FIRM = "firm-writes"


@pytest.fixture
def table(pk_sk_table: Table) -> Table:
    return pk_sk_table


def count_batch_writes(table: Any, fail_call: int | None = None) -> Counter[str]:
    """Count BatchWriteItem requests (from any thread); make call number ``fail_call`` fail."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def hook(params: dict[str, Any], **_: Any) -> None:
        with lock:
            calls["requests"] += 1
            number = calls["requests"]
            calls["items"] += sum(len(requests) for requests in params["RequestItems"].values())
        if number == fail_call:
            raise ClientError(
                {"Error": {"Code": "InternalServerError", "Message": "DynamoDB had a problem"}},
                "BatchWriteItem",
            )

    table.client.meta.events.register("provide-client-params.dynamodb.BatchWriteItem", hook)
    return calls


def writer_threads(prefix: str = "active-writes") -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(prefix)]


def create_clients(repo: ActiveRepository, count: int) -> list[str]:
    return [
        repo.create("client", {"legal_name": f"Client {n}", "code": f"C{n:05d}", "xpm_uuid": f"uuid-{n}"})
        for n in range(count)
    ]


def stored_clients(table: Any) -> dict[str, dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = table.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return {str(item["client_id"]): item for item in items}
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_every_created_record_is_written_25_to_a_request_and_no_thread_outlives_the_flush(table: Any) -> None:
    calls = count_batch_writes(table)
    repo = ActiveRepository(table, FIRM)

    ids = create_clients(repo, 1_010)
    repo.flush()

    stored = stored_clients(table)
    assert set(stored) == set(ids)
    assert stored[ids[1_009]]["code"] == "C01009"
    assert stored[ids[0]]["entity"] == "client"
    assert stored[ids[0]]["firm_id"] == FIRM
    assert stored[ids[0]]["sk"] == f"CLIENT#{ids[0]}"
    assert calls == Counter({"requests": 41, "items": 1_010})  # 40 full requests and one of 10
    assert writer_threads() == []


def test_flush_with_nothing_created_writes_nothing(table: Any) -> None:
    calls = count_batch_writes(table)
    repo = ActiveRepository(table, FIRM)

    repo.flush()

    assert calls == Counter()
    assert writer_threads() == []


def test_a_failed_write_is_raised_and_every_other_batch_is_still_written(table: Any) -> None:
    calls = count_batch_writes(table, fail_call=3)
    repo = ActiveRepository(table, FIRM, writers=2)

    def run_part() -> None:
        try:
            create_clients(repo, 500)  # the failure may already surface here...
        finally:
            repo.flush()  # ...or here, as the engine always flushes before the run is recorded

    with pytest.raises(ClientError, match="DynamoDB had a problem"):
        run_part()

    stored = stored_clients(table)
    assert calls["requests"] >= 3
    assert len(stored) == calls["items"] - 25  # everything sent but the one failed request
    assert writer_threads() == []


def test_records_created_after_a_flush_are_written_by_the_next_flush(table: Any) -> None:
    repo = ActiveRepository(table, FIRM)
    first = create_clients(repo, 30)
    repo.flush()
    second = repo.create("client", {"legal_name": "Late", "code": "LATE", "xpm_uuid": "uuid-late"})
    repo.flush()

    assert set(stored_clients(table)) == {*first, second}
    assert writer_threads() == []


def test_codes_swapped_between_clients_are_written_together(table: Any) -> None:
    repo = ActiveRepository(table, FIRM)
    one, other, untouched = create_clients(repo, 3)
    repo.flush()

    assert repo.set_codes("client", [(one, "C00001"), (other, "C00000")]) is True

    stored = stored_clients(table)
    assert [stored[i]["code"] for i in (one, other, untouched)] == ["C00001", "C00000", "C00002"]
    assert stored[one]["legal_name"] == "Client 0", "nothing but the code changes"


def test_codes_are_not_swapped_when_one_client_is_gone(table: Any) -> None:
    repo = ActiveRepository(table, FIRM)
    one, other = create_clients(repo, 2)
    repo.flush()
    table.delete_item(Key={"pk": stored_clients(table)[other]["pk"], "sk": f"CLIENT#{other}"})

    assert repo.set_codes("client", [(one, "C00001"), (other, "C00000")]) is False

    stored = stored_clients(table)
    assert list(stored) == [one]
    assert stored[one]["code"] == "C00000", "nothing is written"


def test_a_default_partner_is_set_on_an_office_and_never_creates_one(table: Table) -> None:
    repo = ActiveRepository(table, FIRM)
    table.put_item(Item={"pk": f"FIRM#{FIRM}", "sk": "OFFICE#HQ", "code": "HQ", "name": "Head office"})

    repo.set_default_partner("HQ", "user-1")
    with pytest.raises(OfficeGone):
        repo.set_default_partner("GONE", "user-1")  # deleted between the setup page's check and the write

    assert repo.default_partner("HQ") == "user-1"
    assert table.get_item(Key={"pk": f"FIRM#{FIRM}", "sk": "OFFICE#GONE"}).get("Item") is None


def rename_all(repo: ActiveRepository, ids: list[str]) -> list[Any]:
    return [
        repo.update_soon("client", client_id, {"legal_name": f"Renamed {client_id}"}) for client_id in ids
    ]


def test_updates_sent_on_go_out_100_to_a_transaction_and_touch_nothing_else(table: Table) -> None:
    repo = ActiveRepository(table, FIRM)
    ids = create_clients(repo, 250)
    repo.flush()
    table.update_item(
        Key={"pk": f"FIRM#{FIRM}", "sk": f"CLIENT#{ids[7]}"}, **update_expression({"notes": "Active's"})
    )
    requests = count_requests(table)

    answers = rename_all(repo, ids)
    repo.flush()

    assert [answer.result() for answer in answers] == [None] * 250
    assert requests == {"TransactWriteItems": 3}  # 100 + 100 + 50, no UpdateItem
    stored = stored_clients(table)
    assert all(stored[client_id]["legal_name"] == f"Renamed {client_id}" for client_id in ids)
    assert stored[ids[7]]["notes"] == "Active's"
    assert writer_threads("active-updates") == []


def test_a_refused_transaction_is_written_again_one_update_at_a_time(table: Table) -> None:
    repo = ActiveRepository(table, FIRM)
    ids = create_clients(repo, 5)
    repo.flush()
    table.delete_item(Key={"pk": f"FIRM#{FIRM}", "sk": f"CLIENT#{ids[2]}"})  # deleted in Active meanwhile
    requests = count_requests(table)

    answers = rename_all(repo, ids)
    repo.flush()

    with pytest.raises(RecordGone):
        answers[2].result()
    assert [answers[n].result() for n in (0, 1, 3, 4)] == [None] * 4
    assert requests == {"TransactWriteItems": 1, "UpdateItem": 5}
    stored = stored_clients(table)
    assert ids[2] not in stored, "a client Active deleted is never written back"
    assert {stored[n]["legal_name"] for n in stored} == {f"Renamed {n}" for n in stored}


def test_asking_for_an_update_sends_it_and_a_failed_transaction_fails_each_of_its_updates(
    table: Table,
) -> None:
    repo = ActiveRepository(table, FIRM)
    ids = create_clients(repo, 3)
    repo.flush()

    assert repo.update_soon("client", ids[0], {"legal_name": "Asked for"}).result(timeout=30) is None
    assert stored_clients(table)[ids[0]]["legal_name"] == "Asked for"

    def unavailable(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "down"}}, "TransactWriteItems")

    table.client.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", unavailable)
    answers = rename_all(repo, ids)
    repo.flush()

    for answer in answers:
        with pytest.raises(ClientError, match="InternalServerError"):
            answer.result()
    assert stored_clients(table)[ids[1]]["legal_name"] == "Client 1"


def test_updates_no_thread_could_take_are_failed_not_left_waiting(
    table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = ActiveRepository(table, FIRM)
    ids = create_clients(repo, 100)
    repo.flush()

    def no_thread(*_: Any, **__: Any) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(ThreadPoolExecutor, "submit", no_thread)
    answers = rename_all(repo, ids[:99])
    with pytest.raises(RuntimeError):
        repo.update_soon("client", ids[99], {"legal_name": "The hundredth"})  # the transaction is due

    assert all(isinstance(answer.exception(timeout=5), RuntimeError) for answer in answers)
    repo.flush()
    assert stored_clients(table)[ids[0]]["legal_name"] == "Client 0"


def test_record_ids_are_distinct_uuid4s_drawn_a_batch_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[int] = []
    real_urandom = os.urandom

    def counting_urandom(size: int) -> bytes:
        draws.append(size)
        return real_urandom(size)

    monkeypatch.setattr(os, "urandom", counting_urandom)
    ids = RecordIds()

    drawn = [ids.new() for _ in range(1000)]

    assert len(set(drawn)) == 1000
    assert all(uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value for value in drawn)
    assert len(draws) == 4  # 256 ids a call, not one call (and one GIL hand-off) per record


# --- Reads by key (SPEC A7) and records too large (SPEC A4) -----------------------------------


def test_clients_are_found_by_xpm_uuid_and_by_code_in_any_case_through_the_templates_indexes(
    aws: Any,
) -> None:
    repo = ActiveRepository(aws_clients.table(aws.active_table), FIRM)
    other_firm = ActiveRepository(aws_clients.table(aws.active_table), "another-firm")
    linked = repo.create("client", {"legal_name": "Acme", "code": "ACME", "xpm_uuid": "u-1"})
    by_hand = repo.create("client", {"legal_name": "Trial", "code": "trial7"})
    other_firm.create("client", {"legal_name": "Theirs", "code": "ACME", "xpm_uuid": "u-1"})
    repo.create("user", {"email": "pat@firm.example", "xpm_uuid": "u-1"})
    for written in (repo, other_firm):
        written.flush()

    assert [c.client_id for c in repo.clients_by_uuid(["u-1", "u-unknown"])] == [linked]
    assert {c.client_id for c in repo.clients_by_code(["acme", "TRIAL7"])} == {linked, by_hand}
    assert repo.clients_by_uuid([]) == []
    # A code typed by hand capitalised or in title case is found too
    capitalised = repo.create("client", {"legal_name": "Abc", "code": "Abc01"})
    titled = repo.create("client", {"legal_name": "Smith", "code": "Smith-Jones"})
    repo.flush()
    found = {c.client_id for c in repo.clients_by_code(["ABC01", "SMITH-JONES"])}
    assert found == {capitalised, titled}
    # A value longer than an index key (1,024 bytes) is held by no item: nothing found, no error
    assert {c.client_id for c in repo.clients_by_code(["ACME", "ß" * 600])} == {linked}
    assert repo.clients_by_uuid(["u" * 1100]) == []


def test_a_client_the_sync_created_is_found_again_by_key_100_to_a_request_with_no_index_query(
    aws: Any,
) -> None:
    table = aws_clients.table(aws.active_table)
    first_sync = ActiveRepository(table, FIRM)
    assert first_sync.clients() == []  # a full read: every id it has not seen is free
    created = {
        f"uuid-{n}": first_sync.create("client", {"legal_name": f"C{n}", "xpm_uuid": f"uuid-{n}"})
        for n in range(150)
    }
    first_sync.flush()

    later_run = ActiveRepository(table, FIRM)
    requests = count_requests(table)
    found = later_run.clients_by_uuid([*created, "uuid-unknown"])

    assert {client.xpm_uuid: client.client_id for client in found} == created
    assert requests == {"BatchGetItem": 2, "Query": 1}  # 151 keys; the unknown UUID asks the index
    assert created["uuid-3"] == linked_client_id("uuid-3")


def test_a_client_linked_by_hand_or_relinked_is_found_by_the_index_and_never_overwritten(aws: Any) -> None:
    table = aws_clients.table(aws.active_table)
    first_sync = ActiveRepository(table, FIRM)
    first_sync.clients()
    old_home = first_sync.create("client", {"legal_name": "Acme", "code": "ACME", "xpm_uuid": "u-old"})
    first_sync.flush()
    # XPM's client was deleted and re-created (SPEC A2): its Active client now links the new UUID.
    first_sync.update("client", old_home, {"xpm_uuid": "u-new"})
    by_hand = first_sync.create("client", {"legal_name": "Trial", "code": "T1"})  # no UUID: a random id
    first_sync.flush()
    first_sync.update("client", by_hand, {"xpm_uuid": "u-hand"})

    later_run = ActiveRepository(table, FIRM)
    found = later_run.clients_by_uuid(["u-old", "u-new", "u-hand"])
    assert {client.xpm_uuid: client.client_id for client in found} == {"u-new": old_home, "u-hand": by_hand}
    # u-old's derived id is held by the relinked client: a new client for u-old takes another.
    new_home = later_run.create("client", {"legal_name": "Acme again", "xpm_uuid": "u-old"})
    later_run.flush()

    assert old_home == linked_client_id("u-old") != new_home
    assert stored_clients(table)[old_home]["xpm_uuid"] == "u-new"
    assert stored_clients(table)[new_home]["xpm_uuid"] == "u-old"
    # A run that has read neither the whole firm nor the derived key gives a random id.
    unread = ActiveRepository(table, FIRM).create("client", {"legal_name": "Beta", "xpm_uuid": "u-beta"})
    assert unread != linked_client_id("u-beta")


def test_a_record_over_dynamodbs_item_limit_is_refused_before_it_is_written(table: Table) -> None:
    repo = ActiveRepository(table, FIRM)
    repo.create("client", {"legal_name": "Fine", "code": "OK1"})

    with pytest.raises(RecordTooLarge):
        repo.create("client", {"legal_name": "N" * 450_000, "code": "BIG"})
    # A preview asks the same question of a record it only plans (SPEC B6), and writes nothing
    repo.check_fits("client", {"legal_name": "Fine too", "code": "OK2"})
    with pytest.raises(RecordTooLarge):
        repo.check_fits("user", {"first_name": "N" * 450_000, "email": "n@harbour.example"})
    repo.flush()

    assert [item["code"] for item in stored_clients(table).values()] == ["OK1"]
