"""A firm's life over the years, end to end (issues 18 and 20): the hourly path (scheduled event ->
dispatcher -> SQS FIFO -> worker handler) on moto, against the XPM simulator over HTTP, switched
to send what practices and XPM really send: prospects, re-created clients, records without a UUID
or twice in one answer, a huge element, a slow-drip answer, staff who leave, a tenant that
refuses, an outage. Each test is named after the SPEC rule it proves."""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.adapters.xpm.client import XpmApi
from xpm_sync.composition import worker as worker_composition

from functions.sync_dispatch.app import lambda_handler as dispatch_handler
from functions.sync_worker.app import lambda_handler as worker_handler
from local.lambda_runtime import Delivery, LocalContext, drain_queue, scheduled_event
from local.xpm_sim.model import SimClient
from tests.fixtures.sync import ScaledInvocations, SyncWorld

pytestmark = pytest.mark.e2e


# --- helpers -------------------------------------------------------------------------------------


def entries_of(world: SyncWorld, xpm_uuid: str) -> list[tuple[str, str]]:
    """(code, severity) of the last run's entries about one XPM record."""
    return [(e.code, e.severity) for e in world.entries() if e.xpm_uuid == xpm_uuid]


def run_level(world: SyncWorld) -> list[tuple[str, str]]:
    return [(e.code, e.severity) for e in world.entries() if e.entity == "run"]


def assert_no_two_share_an_xpm_uuid_or_a_code(world: SyncWorld) -> None:
    clients = world.items("client")
    by_uuid = Counter(c["xpm_uuid"] for c in clients if c.get("xpm_uuid"))
    by_code = Counter(str(c["code"]).casefold() for c in clients if c.get("code"))
    assert [u for u, n in by_uuid.items() if n > 1] == []
    assert [c for c, n in by_code.items() if n > 1] == []


def without(world: SyncWorld, *uuids: str) -> set[str]:
    return {c.uuid for c in world.practice.clients} - set(uuids)


def synced_uuids(world: SyncWorld) -> set[str]:
    return {c["xpm_uuid"] for c in world.items("client") if c.get("xpm_uuid")}


@dataclass
class Redelivery:
    """The SQS records the worker got, so that a failed one can be delivered again (its visibility
    timeout running out), as SQS retries a record the worker reported failed."""

    world: SyncWorld
    records: list[dict[str, Any]] = field(default_factory=list)

    def worker(self, event: dict[str, Any], context: Any) -> Any:
        self.records.extend(event["Records"])
        return worker_handler(event, context)

    def run_hourly(self) -> list[Delivery]:
        dispatch_handler(scheduled_event(), LocalContext("SyncDispatchFunction"))
        return self.drain()

    def drain(self) -> list[Delivery]:
        return drain_queue(aws_clients.client("sqs"), self.world.names.queue_url, self.worker)

    def next_hour(self) -> list[Delivery]:
        """The next hour's dispatch: the same request, past SQS's 5-minute deduplication window."""
        aws_clients.client("sqs").send_message(
            QueueUrl=self.world.names.queue_url,
            MessageBody=json.dumps({"firm_id": self.world.firm_id, "trigger": "schedule"}),
            MessageGroupId=self.world.firm_id,
            MessageDeduplicationId=f"next-hour-{len(self.records)}",
        )
        return self.drain()

    def again(self) -> list[Delivery]:
        sqs = aws_clients.client("sqs")
        for record in self.records:
            try:
                sqs.change_message_visibility(
                    QueueUrl=self.world.names.queue_url,
                    ReceiptHandle=record["receiptHandle"],
                    VisibilityTimeout=0,
                )
            except sqs.exceptions.ClientError:
                continue  # deleted after it succeeded
        return self.drain()


# --- SPEC A4: a client archived or deleted in XPM and re-created with the same code ---------------


@pytest.mark.parametrize("deleted", [False, True], ids=["archived", "deleted"])
def test_a_client_recreated_in_xpm_with_the_same_code_takes_its_active_client_back(
    world: SyncWorld, deleted: bool
) -> None:
    # Given a client synced to Active, that the practice archives (or deletes) and types in again
    world.run_hourly()
    old = world.clean_clients()[3]
    before = world.client_by_uuid(old.uuid)
    clients_before = len(world.items("client"))

    fresh = world.practice.recreate_client(old.uuid, deleted=deleted)

    # When the next hourly run goes
    deliveries = world.run_hourly()

    # Then the live XPM client takes the Active client back: same record, UUID moved, flag cleared
    assert not any(d.failed for d in deliveries)
    relinked = world.client_by_uuid(fresh.uuid)
    assert relinked["client_id"] == before["client_id"]
    assert relinked["code"] == old.code
    assert relinked["xpm_archived"] is False
    assert not [c for c in world.items("client") if c.get("xpm_uuid") == old.uuid]
    assert len(world.items("client")) == clients_before, "the old record is never duplicated"
    assert_no_two_share_an_xpm_uuid_or_a_code(world)
    # And a CLIENT_RELINKED warning names both
    [entry] = [e for e in world.entries() if e.code == "CLIENT_RELINKED"]
    assert (entry.severity, entry.xpm_uuid) == ("warning", fresh.uuid)
    assert old.uuid in entry.message
    assert (old.name or "") in entry.message
    assert world.last_run().status == "success"

    # And the next run has nothing left to say about either
    world.run_hourly()
    assert world.entries() == []
    assert world.open_problems() == {}


def test_a_recreated_client_listed_before_its_archived_original_still_takes_the_record_back(
    world: SyncWorld,
) -> None:
    # Given the re-created client comes first in XPM's answer, before the archived original
    world.run_hourly()
    old = world.clean_clients()[5]
    client_id = world.client_by_uuid(old.uuid)["client_id"]
    fresh = world.practice.recreate_client(old.uuid)
    world.practice.clients.remove(fresh)
    world.practice.clients.insert(0, fresh)

    # When the next run goes
    world.run_hourly()

    # Then the order makes no difference: one Active client, relinked, no duplicate-code error
    assert world.client_by_uuid(fresh.uuid)["client_id"] == client_id
    assert {e.code for e in world.entries()} == {"CLIENT_RELINKED"}
    assert_no_two_share_an_xpm_uuid_or_a_code(world)


def test_a_client_recreated_after_its_archive_was_synced_takes_the_record_back_later(
    world: SyncWorld,
) -> None:
    # Given an archived client already marked xpm_archived in Active by an earlier run
    world.run_hourly()
    old = world.clean_clients()[6]
    world.practice.archive_client(old.uuid)
    world.run_hourly()
    assert world.client_by_uuid(old.uuid)["xpm_archived"] is True

    # When the practice types it in again, days later, and the next run goes
    fresh = world.practice.recreate_client(old.uuid)
    world.run_hourly()

    # Then the new XPM client links to the archived Active client
    relinked = world.client_by_uuid(fresh.uuid)
    assert (relinked["code"], relinked["xpm_archived"]) == (old.code, False)
    assert entries_of(world, fresh.uuid) == [("CLIENT_RELINKED", "warning")]
    assert_no_two_share_an_xpm_uuid_or_a_code(world)


# --- SPEC A2: prospects ----------------------------------------------------------------------------


def test_prospects_are_skipped_until_xpm_turns_them_into_clients(world: SyncWorld) -> None:
    # Given a prospect in XPM (no code, no partner yet)
    prospect = world.practice.add_prospect("Maybe Later Pty Ltd", BusinessStructure="Company")

    # When the first sync goes
    world.run_hourly()

    # Then it is counted skipped, with no entry and no Active client
    run = world.last_run()
    assert run.status == "success", world.entries()
    assert run.counts["client"]["skipped"] == 1
    assert entries_of(world, prospect.uuid) == []
    assert prospect.uuid not in synced_uuids(world)
    assert synced_uuids(world) == without(world, prospect.uuid)

    # And once XPM turns it into a client, the next run creates it
    partner = world.practice.partner_staff()[0].uuid
    world.practice.update_client(
        prospect.uuid, IsProspect=False, ClientCode="MAYB0001", AccountManager=partner
    )
    world.run_hourly()
    assert world.client_by_uuid(prospect.uuid)["code"] == "MAYB0001"
    assert world.last_run().counts["client"]["created"] == 1


def test_a_linked_client_that_becomes_a_prospect_is_left_as_it_is(world: SyncWorld) -> None:
    # Given a synced client that XPM now flags as a prospect (and renames)
    world.run_hourly()
    client = world.clean_clients()[2]
    before = world.client_by_uuid(client.uuid)
    world.practice.update_client(client.uuid, IsProspect=True, Name="Renamed While A Prospect")

    # When the next run goes
    world.run_hourly()

    # Then the Active client is left exactly as it was, and the record counts skipped
    assert world.client_by_uuid(client.uuid) == before
    run = world.last_run()
    assert run.counts["client"] == {"created": 0, "updated": 0, "unchanged": 0, "failed": 0, "skipped": 1}
    assert world.entries() == []


# --- SPEC A4: a record without a UUID ----------------------------------------------------------


def test_a_client_without_uuid_is_an_error_of_its_own_and_the_others_sync(world: SyncWorld) -> None:
    # Given XPM sends one client without its UUID
    nameless = world.clean_clients()[4]
    world.practice.drop_uuid(nameless.uuid)

    # When the first sync goes
    deliveries = world.run_hourly()

    # Then that record alone is an error; every other client syncs and the run is partial
    assert not any(d.failed for d in deliveries), "one bad record never fails a run"
    run = world.last_run()
    assert run.status == "partial"
    [entry] = world.entries()
    assert (entry.code, entry.severity, entry.xpm_uuid) == ("CLIENT_UUID_MISSING", "error", None)
    assert entry.label == f"{nameless.name} ({nameless.code})"
    assert synced_uuids(world) == without(world, nameless.uuid)
    assert run.counts["client"]["failed"] == 1
    assert not [c for c in world.items("client") if c.get("code") == nameless.code]
    # And its problem is open, keyed by its label (SPEC B6), with no copy kept for a retry
    assert world.open_problems() == {f"client#label#{entry.label}": {"CLIENT_UUID_MISSING"}}
    assert world.awaiting_retry() == set()

    # And once XPM sends its UUID again, it syncs; the daily full read closes the old problem
    world.practice.drop_uuid(nameless.uuid, dropped=False)
    world.full_read_due()
    world.run_hourly()
    assert world.client_by_uuid(nameless.uuid)["code"] == nameless.code
    assert world.last_run().status == "success"
    assert world.open_problems() == {}


# --- SPEC A4, issue 18 item 2: the same UUID several times in one answer --------------------------


@pytest.mark.parametrize("when", ["first sync", "later run"])
def test_the_same_uuid_three_times_gives_one_active_client_and_two_repeats(
    world: SyncWorld, when: str
) -> None:
    # Given XPM answers one client three times in one list, the later copies with another name
    target = world.clean_clients()[1]
    if when == "later run":
        world.run_hourly()
    world.practice.repeat_client(target.uuid, copies=2, Name="A Second Copy Pty Ltd")
    world.practice.update_client(target.uuid, Fax="03 5555 0101")  # listed again on a later run

    # When the run goes
    world.run_hourly()

    # Then the first copy syncs, and each later one is an XPM_UUID_REPEATED error, dropped
    stored = world.client_by_uuid(target.uuid)
    assert stored["legal_name"] == target.name
    assert stored["fax"] == "03 5555 0101"
    assert entries_of(world, target.uuid) == [("XPM_UUID_REPEATED", "error")] * 2
    assert_no_two_share_an_xpm_uuid_or_a_code(world)
    assert world.awaiting_retry() == set(), "a repeat is dropped, not kept for a retry"
    run = world.last_run()
    assert run.status == "partial"
    assert run.counts["client"]["failed"] == 2
    assert synced_uuids(world) == without(world)


def test_every_client_sent_three_times_makes_no_duplicate(world: SyncWorld) -> None:
    # Given issue 18's probe: many records repeated (every clean client three times)
    clean = world.clean_clients()
    for client in clean:
        world.practice.repeat_client(client.uuid, copies=2)

    # When the first sync and the next go
    world.run_hourly()
    first = world.last_run()
    world.run_hourly()

    # Then each XPM client is one Active client; every repeat is reported, none stored
    clients = world.items("client")
    assert Counter(c["xpm_uuid"] for c in clients) == Counter(without(world))
    assert first.counts["client"]["failed"] == 2 * len(clean)
    assert {e.code for e in world.entries(first)} == {"XPM_UUID_REPEATED"}
    assert world.awaiting_retry() == set()


# --- SPEC A4: keys DynamoDB refuses (found by a probe, 2026-12-07) ----------------------------------


@pytest.mark.parametrize("incremental", [False, True], ids=["first sync", "hourly run"])
def test_a_code_or_uuid_longer_than_dynamodbs_keys_fails_that_record_alone(
    world: SyncWorld, incremental: bool
) -> None:
    # Given a client whose Client Code is 300 emoji (1,200 bytes: past the by_code index's 1,024),
    # and a client whose UUID is 1,100 characters with no partner (its problem would be keyed by it)
    clean = world.clean_clients()
    long_code, template = clean[1], clean[5]
    if incremental:
        world.run_hourly()
        assert world.last_run().status == "success", world.entries()
        code_before = world.client_by_uuid(long_code.uuid)["code"]
    world.practice.update_client(long_code.uuid, ClientCode="\U0001f389" * 300)
    long_uuid = SimClient(
        uuid="U" * 1100, elements=copy.deepcopy(template.elements), account_manager_uuid=None
    )
    long_uuid.elements["ClientCode"] = "LONGID1"
    world.practice.add_client(long_uuid)

    # When the run goes
    deliveries = world.run_hourly()

    # Then the run completes, partial: each of the two is an error entry alone, the others sync
    assert not any(d.failed for d in deliveries)
    run = world.last_run()
    assert run.status == "partial", world.entries(run)
    assert sorted((e.code, e.xpm_uuid) for e in world.entries(run)) == [
        ("CLIENT_CODE_TOO_LONG", long_code.uuid),
        ("CLIENT_UUID_MISSING", None),
    ]
    assert run.counts["client"]["failed"] == 2
    if incremental:
        # Linked already, it keeps what it had
        assert synced_uuids(world) == without(world, long_uuid.uuid)
        assert world.client_by_uuid(long_code.uuid)["code"] == code_before
    else:
        assert synced_uuids(world) == without(world, long_code.uuid, long_uuid.uuid)

    # And once XPM's code is short again, the client syncs under it
    world.practice.update_client(long_code.uuid, ClientCode="PARTY1")
    world.run_hourly()
    assert world.client_by_uuid(long_code.uuid)["code"] == "PARTY1"


# --- SPEC A4, issue 18 item 3: a record too large for DynamoDB ------------------------------------


def test_a_450000_character_name_is_record_too_large_for_that_record_alone(world: SyncWorld) -> None:
    # Given one client in the middle of the first sync's batch with a Name of 450,000 characters
    huge = world.clean_clients()[7]
    world.practice.update_client(huge.uuid, Name="N" * 450_000)
    # Last changed in XPM days ago: the hourly reads that follow do not list it again.
    world.practice.client(huge.uuid).modified_at = datetime.now(UTC) - timedelta(days=3)

    # When the first sync goes
    deliveries = world.run_hourly()

    # Then that record alone is RECORD_TOO_LARGE; the batch's others are written and counted truly
    assert not any(d.failed for d in deliveries)
    run = world.last_run()
    assert run.status == "partial", world.entries()
    assert [(e.code, e.xpm_uuid) for e in world.entries()] == [("RECORD_TOO_LARGE", huge.uuid)]
    assert synced_uuids(world) == without(world, huge.uuid)
    written = len([c for c in world.items("client") if c.get("xpm_uuid")])
    assert run.counts["client"]["created"] + run.counts["client"]["updated"] == written
    assert run.counts["client"]["failed"] == 1
    assert huge.uuid not in world.awaiting_retry(), "retried only when XPM sends a new copy"
    assert len(world.entries()[0].label) <= 200

    # And the next runs do not fail: the hourly one, and the daily full read that meets it again
    world.run_hourly()
    assert world.last_run().status == "success", world.entries()
    world.full_read_due()
    world.run_hourly()
    assert world.last_run().status == "partial"
    assert [e.code for e in world.entries()] == ["RECORD_TOO_LARGE"]

    # And once XPM sends it with a usable Name, it syncs and its problem closes
    world.practice.update_client(huge.uuid, Name="Back To Normal Pty Ltd")
    world.run_hourly()
    assert world.client_by_uuid(huge.uuid)["legal_name"] == "Back To Normal Pty Ltd"
    assert world.open_problems() == {}


# --- SPEC A6: the connection's owner, the default partner -----------------------------------------


def test_connection_owner_not_in_xpm_is_a_run_level_warning(world: SyncWorld) -> None:
    # Given the firm was connected by a staff member (emails compared case-insensitively, trimmed)
    owner = world.practice.staff[-1]
    for client in world.practice.clients:
        if client.job_manager_uuid == owner.uuid:
            world.practice.update_client(client.uuid, JobManager=None)
    world.update_config(connected_by_email=f"  {(owner.email or '').upper()} ")
    world.run_hourly()
    assert run_level(world) == []

    # When that person leaves XPM's staff list
    world.practice.remove_staff(owner.uuid)
    world.run_hourly()

    # Then the run warns that the connection will break, and still syncs
    assert run_level(world) == [("CONNECTION_OWNER_NOT_IN_XPM", "warning")]
    [entry] = [e for e in world.entries() if e.entity == "run"]
    assert "reconnect" in entry.suggestion.lower()
    assert world.last_run().status == "success"


def test_a_default_partner_no_longer_in_active_is_a_run_error_and_its_clients_fail(
    world: SyncWorld,
) -> None:
    # Given a Default Partner set in Active, and a client with no Partner in XPM
    client = world.clean_clients()[0]
    world.practice.update_client(client.uuid, AccountManager=None)
    world.active.update_item(
        Key={"pk": f"FIRM#{world.firm_id}", "sk": f"OFFICE#{world.firm.office_code}"},
        UpdateExpression="SET default_partner_user_id = :p",
        ExpressionAttributeValues={":p": "user-who-left-the-firm"},
    )

    # When the run goes while that user is no longer in Active
    world.run_hourly()

    # Then the run says so, and the client that needs it fails with PARTNER_MISSING
    assert run_level(world) == [("DEFAULT_PARTNER_NOT_IN_ACTIVE", "error")]
    assert entries_of(world, client.uuid) == [("PARTNER_MISSING", "error")]
    assert client.uuid not in synced_uuids(world)
    assert world.last_run().status == "partial"
    assert synced_uuids(world) == without(world, client.uuid)


# --- SPEC A2, A3: field fidelity --------------------------------------------------------------------


@pytest.mark.parametrize("empty_name", ["", None], ids=["empty", "absent"])
def test_an_individual_with_an_empty_name_takes_its_name_from_first_and_last(
    world: SyncWorld, empty_name: str | None
) -> None:
    client = world.clean_clients()[0]
    world.practice.update_client(
        client.uuid, Name=empty_name, FirstName="Mary Jane", LastName="Smith", BusinessStructure="Individual"
    )

    world.run_hourly()

    stored = world.client_by_uuid(client.uuid)
    assert stored["legal_name"] == "Mary Jane Smith"
    assert (stored["individual_first_name"], stored["individual_last_name"]) == ("Mary Jane", "Smith")
    assert entries_of(world, client.uuid) == []


BUSINESS_STRUCTURES: list[tuple[str, str]] = [
    ("Self-Managed Superannuation Fund", "super_fund"),
    ("Self-Managed-Superannuation-Fund", "super_fund"),
    ("Super Fund", "super_fund"),
    ("SMSF", "super_fund"),
    ("SoleTrader", "sole_trader"),
    ("sole_trader", "sole_trader"),
    ("Trust (Discretionary)", "trust"),
    ("Trust - Unit", "trust"),
    ("Trust (Family)", "trust"),
    ("Discretionary Trust", "trust"),
    ("Deceased Estate", "trust"),
    ("Pty Ltd", "company"),
    ("Public Company", "company"),
    ("Limited Company", "company"),
]


def test_business_structure_spellings_map_as_spec_a3_says(world: SyncWorld) -> None:
    # Given clients whose Business Structure is typed as practices type it
    clients = world.clean_clients()
    assert len(clients) >= len(BUSINESS_STRUCTURES) + 1
    for client, (structure, _) in zip(clients, BUSINESS_STRUCTURES, strict=False):
        world.practice.update_client(
            client.uuid, BusinessStructure=structure, FirstName="Ann", LastName="Lee"
        )
    custom = clients[len(BUSINESS_STRUCTURES)]
    world.practice.update_client(custom.uuid, BusinessStructure="Incorporated Association")

    # When they sync
    world.run_hourly()

    # Then each maps to its entity type; a value SPEC A3 does not know is `other` with a warning
    mapped = {
        structure: world.client_by_uuid(client.uuid)["entity_type"]
        for client, (structure, _) in zip(clients, BUSINESS_STRUCTURES, strict=False)
    }
    assert mapped == dict(BUSINESS_STRUCTURES)
    assert world.client_by_uuid(custom.uuid)["entity_type"] == "other"
    [warning] = [e for e in world.entries() if e.xpm_uuid == custom.uuid]
    assert (warning.code, warning.severity) == ("BUSINESS_STRUCTURE_UNKNOWN", "warning")
    assert "Incorporated Association" in warning.message
    assert [e for e in world.entries() if e.severity == "error"] == []


# --- SPEC A5, A6: whose problem a failure is, and when it is emailed ---------------------------------


def test_a_403_wrong_tenant_answer_marks_the_firm_needs_reconnect_and_is_not_retried(
    world: SyncWorld,
) -> None:
    # Given the practice no longer lets this connection in (Xero's gateway answers 403)
    world.sim.faults.add("wrong_tenant", times=None)

    # When the hourly run goes
    deliveries = world.run_hourly()

    # Then the run fails asking to reconnect; SQS does not retry it, and the admin is told at once
    assert not any(d.failed for d in deliveries)
    assert world.last_run().status == "failed"
    assert run_level(world) == [("XPM_WRONG_TENANT", "error")]
    assert world.config().status == "needs_reconnect"
    assert len(world.emails()) == 1
    # And the next hour does not try again
    assert world.run_hourly() == []


def test_a_transient_xpm_outage_emails_only_from_the_third_failed_run_in_a_row(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given XPM unavailable for a while (the XPM client's back-off sleeps through a no-op)
    monkeypatch.setattr(
        worker_composition, "XpmApi", lambda **kwargs: XpmApi(**{**kwargs, "sleep": lambda _: None})
    )
    world.sim.faults.add("unavailable", times=None)
    sqs = Redelivery(world)

    # When the run fails, and SQS delivers it again twice
    sqs.run_hourly()
    after_first = len(world.emails())
    sqs.again()
    after_second = len(world.emails())
    sqs.again()

    # Then only the third failed run in a row emails (SPEC A5)
    statuses = [run.status for run in world.runs()]
    assert statuses == ["failed"] * 3
    assert (after_first, after_second, len(world.emails())) == (0, 0, 1)
    assert world.config().transient_failures_in_a_row == 3

    # And once XPM is back (the thrice-failed message gone to the dead-letter queue), the next
    # hour's run completes and the count starts again
    world.sim.faults.clear()
    assert sqs.again() == [], "maxReceiveCount 3: not delivered a fourth time"
    sqs.next_hour()
    assert world.last_run().status == "success"
    assert world.config().transient_failures_in_a_row == 0


def test_a_record_error_emails_at_once(world: SyncWorld) -> None:
    client = world.clean_clients()[0]
    world.practice.update_client(client.uuid, AccountManager=None)

    world.run_hourly()

    assert world.last_run().status == "partial"
    [email] = world.emails()
    assert "admin@firm.example" in json.dumps(email["to"])
    assert (client.name or "") in json.dumps(email["body"])


# --- SPEC B6: open problems close --------------------------------------------------------------------


def test_an_open_problem_closes_when_a_fix_in_active_lets_the_record_sync(world: SyncWorld) -> None:
    # Given a client failing for want of a partner, its problem open
    client = world.clean_clients()[0]
    world.practice.update_client(client.uuid, AccountManager=None)
    world.run_hourly()
    assert world.open_problems() == {f"client#{client.uuid}": {"PARTNER_MISSING"}}

    # When the admin sets a Default Partner in Active (nothing changes in XPM)
    world.set_default_partner()
    world.run_hourly()

    # Then the record syncs from the copy the sync kept, and its problem is closed
    assert world.client_by_uuid(client.uuid)
    assert world.open_problems() == {}
    assert world.awaiting_retry() == set()


def test_an_open_problem_closes_when_xpm_no_longer_lists_the_record(world: SyncWorld) -> None:
    # Given a client failing (no partner), its problem open; XPM's page for it is known
    world.practice.list_web_urls = True
    client = world.clean_clients()[0]
    world.practice.update_client(client.uuid, AccountManager=None)
    world.run_hourly()
    [state] = world.record_states().values()
    assert state.web_url == world.practice.web_url(client)

    # When the practice removes it from XPM altogether, and the daily full read goes
    world.practice.clients.remove(world.practice.client(client.uuid))
    world.full_read_due()
    world.run_hourly()

    # Then its problem is closed and no copy of it is kept
    assert world.open_problems() == {}
    assert world.awaiting_retry() == set()
    assert world.last_run().status == "success"


# --- SPEC A7, issue 18 item 8: a slow-drip answer ---------------------------------------------------


def dispatch_and_deliver(world: SyncWorld, clock: ScaledInvocations, *, parts: int = 100) -> list[Delivery]:
    """The hourly dispatch, then at most ``parts`` worker invocations in scaled time."""
    dispatch_handler(scheduled_event(), LocalContext("SyncDispatchFunction"))
    return deliver(world, clock, parts=parts)


def deliver(world: SyncWorld, clock: ScaledInvocations, *, parts: int = 100) -> list[Delivery]:
    return drain_queue(
        aws_clients.client("sqs"), world.names.queue_url, clock.wrap(worker_handler), max_batches=parts
    )


def pad(world: SyncWorld, bytes_each: int) -> None:
    """Give every client a long note (an element the sync ignores), so a drip brings few at a time."""
    for client in world.practice.clients:
        world.practice.update_client(client.uuid, Notes="n" * bytes_each)


def test_a_slow_drip_answer_ends_the_part_with_a_checkpoint_and_its_continuation(
    world: SyncWorld, scaled: ScaledInvocations
) -> None:
    # Given the client list drips once at issue 18's pace, 64 KB every 2 s (clients of ~16 KB)
    pad(world, 16 * 1024)
    world.sim.faults.add("drip", times=1, path="client.api/list", bytes=64 * 1024, every=2.0)

    # When the hourly run's first invocation goes
    dispatch_and_deliver(world, scaled, parts=1)

    # Then it stopped reading at its deadline, saved a checkpoint and queued its continuation
    [run] = world.runs()
    assert run.status == "running"
    checkpoint = world.config().checkpoint
    assert checkpoint is not None
    assert checkpoint.run_id == run.run_id
    assert 0 < checkpoint.processed < len(world.practice.clients)
    assert scaled.left_at_return[0] > 0, "the invocation was outlived"

    # And the continuation completes the run: every client once, nothing left running
    deliveries = deliver(world, scaled)
    assert len(deliveries) == 1
    [run] = world.runs()
    assert run.status == "success", world.entries(run)
    assert Counter(c["xpm_uuid"] for c in world.items("client")) == Counter(without(world))
    assert world.config().checkpoint is None
    assert min(scaled.left_at_return) > 0, scaled.left_at_return


def test_a_slow_drip_part_applies_what_arrived_before_its_reading_deadline(
    world: SyncWorld, scaled: ScaledInvocations
) -> None:
    # Given the client list drips at issue 18's pace: several clients arrive before the deadline
    pad(world, 16 * 1024)
    world.sim.faults.add("drip", times=None, path="client.api/list", bytes=64 * 1024, every=2.0)

    # When the run's first invocation stops at its reading deadline
    dispatch_and_deliver(world, scaled, parts=1)

    # Then the clients that had arrived were applied, not just one (issue 18 item 8: "each
    # continuation ... applies one record")
    [run] = world.runs()
    applied = sum(run.counts["client"].values())
    checkpoint = world.config().checkpoint
    assert checkpoint is not None
    assert applied == checkpoint.processed
    assert applied >= 4, f"the first part applied {applied} of the clients that had arrived"
    assert scaled.left_at_return[0] > 0


def test_a_drip_pausing_longer_than_the_reading_margin_never_overruns_the_invocation(
    world: SyncWorld, scaled: ScaledInvocations
) -> None:
    # Given a list that drips a piece every 59 s: under the XPM client's 60 s per-read timeout, over
    # the 45 s it keeps between its reading deadline and the invocation's end; the invocation
    # (114 s, on a clock 5 times faster than the wall, so that the start-up's jitter stays small)
    # sees its second piece just before its reading deadline and its third after its end
    scaled.scale, scaled.seconds = 5.0, 114.0
    pad(world, 16 * 1024)
    world.sim.faults.add("drip", times=1, path="client.api/list", bytes=64 * 1024, every=59 / scaled.scale)

    # When the run's first invocation goes
    dispatch_and_deliver(world, scaled, parts=1)

    # Then it ends, checkpoint saved, before its time is up (SPEC A7: a run never outlives it)
    assert world.config().checkpoint is not None
    assert scaled.left_at_return[0] > 0, f"the invocation was outlived by {-scaled.left_at_return[0]:.0f} s"


def test_two_parts_that_apply_nothing_fail_with_xpm_too_slow(
    world: SyncWorld, scaled: ScaledInvocations
) -> None:
    # Given a client list that drips so slowly that no client arrives whole before the deadline
    pad(world, 16 * 1024)
    world.sim.faults.add("drip", times=None, path="client.api/list", bytes=1024, every=1.0)

    # When the hourly run goes
    deliveries = dispatch_and_deliver(world, scaled)

    # Then two parts run, neither applies a client, and the run fails with XPM_TOO_SLOW: no loop
    assert len(deliveries) == 2
    assert not any(d.failed for d in deliveries), "retrying at once would meet the same drip"
    [run] = world.runs()
    assert run.status == "failed"
    assert [e.code for e in world.entries(run) if e.entity == "run"] == ["XPM_TOO_SLOW"]
    assert synced_uuids(world) == set()
    assert world.config().checkpoint is None
    assert min(scaled.left_at_return) > 0, scaled.left_at_return
