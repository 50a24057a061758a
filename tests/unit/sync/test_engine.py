"""One firm's run, through the engine and in-memory fakes (SPEC A1-A7, B6): the rules of a run,
proved in milliseconds. The end-to-end suite (tests/e2e) proves the same path on moto and the
simulator over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from xpm_sync.adapters.dynamodb import MAX_ITEM_BYTES, item_size
from xpm_sync.adapters.xpm.errors import (
    XpmAuthError,
    XpmBadResponse,
    XpmTooSlow,
    XpmUnavailable,
    XpmWrongTenant,
)
from xpm_sync.domain.clock import iso
from xpm_sync.domain.faults import FIRM_PROBLEM_CODES, SYSTEM_FAULT_CODES
from xpm_sync.domain.firm import Checkpoint, FirmConfig, tenant_change
from xpm_sync.domain.mapping import client_label, client_values, map_client
from xpm_sync.domain.notification import should_notify
from xpm_sync.domain.runs import SyncRun
from xpm_sync.domain.xpm_records import XpmClientRecord, XpmStaff
from xpm_sync.sync.engine import RunResult, record_connection_found_lost, run_sync, tell_lost_connection

from tests.fakes import FIRM, OFFICE, START, FakeXpm, Firm
from tests.fixtures.logs import powertools_json_log
from tests.unit.sync.builders import (
    archive,
    client,
    codes_of,
    dry_run,
    preview,
    renumber,
    run,
    staff,
    sync,
    synced_clients,
    synced_then_archived,
    with_partner,
)


@pytest.fixture
def firm() -> Firm:
    return Firm()


def test_a_first_run_creates_every_staff_member_and_client_with_two_xpm_calls(firm: Firm) -> None:
    partner = with_partner(firm)
    firm.xpm.staff.append(staff("Sam Staff"))
    firm.xpm.clients += [client(partner=partner) for _ in range(3)]

    done = run(firm)

    assert done.status == "success"
    assert done.full_read is True
    assert done.counts["user"] == {"created": 1, "updated": 1, "unchanged": 0, "failed": 0, "skipped": 0}
    assert done.counts["client"]["created"] == 3
    assert done.xpm_calls == 2
    assert {item["xpm_uuid"] for item in firm.active.client_items.values()} == {
        c.uuid for c in firm.xpm.clients
    }
    assert all(item["office_code"] == OFFICE for item in firm.active.client_items.values())


def test_an_active_user_is_linked_by_email_in_any_case_and_keeps_what_active_owns(firm: Firm) -> None:
    member = staff("Mary Jane Smith", " Mary.Smith@Harbour.example ")
    firm.xpm.staff.append(member)
    user_id = firm.active.add_user(
        "mary.smith@harbour.example", role="admin", office_code="SYD", modules=["tax"]
    )

    done = run(firm)

    assert done.counts["user"]["updated"] == 1
    assert list(firm.active.user_items) == [user_id], "linked, never duplicated"
    linked = firm.active.user_items[user_id]
    assert linked["xpm_uuid"] == member.uuid
    assert (linked["first_name"], linked["last_name"]) == ("Mary Jane", "Smith")
    assert (linked["role"], linked["office_code"], linked["modules"]) == ("admin", "SYD", ["tax"])


def test_two_staff_members_with_one_email_sync_the_first_and_name_both_for_the_second(firm: Firm) -> None:
    first = staff("Ann Able", "shared@harbour.example")
    second = staff("Bob Baker", "SHARED@harbour.example")
    firm.xpm.staff += [first, second]

    done = run(firm)

    assert done.counts["user"]["created"] == 1
    assert done.counts["user"]["failed"] == 1
    assert [item["xpm_uuid"] for item in firm.active.user_items.values()] == [first.uuid]
    entry = next(e for e in firm.runs.latest_entries() if e.code == "STAFF_EMAIL_DUPLICATE")
    assert entry.xpm_uuid == second.uuid
    assert "Bob Baker" in entry.label
    assert "Ann Able" in entry.message


def test_a_client_entered_by_hand_is_linked_by_code_and_keeps_what_active_owns(firm: Firm) -> None:
    partner = with_partner(firm)
    xpm_client = client("ACME", partner=partner)
    firm.xpm.clients.append(xpm_client)
    trial_id = firm.active.add_client(code="ACME", legal_name="Acme (trial)", notes="met at the expo")

    done = run(firm)

    assert done.counts["client"]["updated"] == 1
    assert len(firm.active.client_items) == 1, "linked, never duplicated"
    linked = firm.active.client_items[trial_id]
    assert linked["xpm_uuid"] == xpm_client.uuid
    assert linked["legal_name"] == xpm_client.name
    assert linked["notes"] == "met at the expo"


def test_a_second_run_reads_only_clients_modified_since_the_last_run_began_and_writes_nothing(
    firm: Firm,
) -> None:
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(20)]
    first = run(firm)
    writes = sum(firm.active.writes.values())
    firm.active.items_read = 0

    second = run(firm)

    assert second.full_read is False
    asked = firm.xpm.client_lists_asked[-1]
    assert asked is not None
    assert asked.isoformat().startswith("2026-03-02T08:55"), asked
    assert first.started_at.startswith("2026-03-02T09:00")
    assert sum(firm.active.writes.values()) == writes
    assert second.counts["client"] == dict.fromkeys(second.counts["client"], 0)
    # Only the users and the office: no client was read, since none changed.
    assert firm.active.items_read == len(firm.active.user_items) + len(firm.active.offices_by_code)


def test_an_incremental_run_reads_from_active_only_the_clients_xpm_sent(firm: Firm) -> None:
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(200)]
    run(firm)
    changed = firm.xpm.clients[7].model_copy(update={"phone": "03 9000 0000"})
    firm.xpm.put(changed, at=firm.clock.now())
    firm.active.items_read = 0

    done = run(firm)

    assert done.counts["client"]["updated"] == 1
    clients_read = firm.active.items_read - len(firm.active.user_items) - len(firm.active.offices_by_code)
    assert clients_read <= 3, "by key: the changed client, not the firm"


def test_a_failed_client_is_retried_from_its_copy_until_a_fix_in_active_lets_it_sync(firm: Firm) -> None:
    # Given a client whose partner is not an Active user (a one-word Name keeps them from syncing)
    outsider = staff("Olly")
    firm.xpm.staff.append(outsider)
    stuck = client(partner=outsider)
    firm.xpm.clients.append(stuck)
    first = run(firm)
    assert first.status == "partial"
    assert {"STAFF_SURNAME_MISSING", "PARTNER_NOT_IN_ACTIVE"} <= set(codes_of(firm))
    assert firm.states.states[f"client#{stuck.uuid}"].retry_copy is not None

    # When nothing changes in XPM, the next run retries it from the copy, with no XPM call for it
    second = run(firm)
    assert second.counts["client"]["failed"] == 1
    assert second.xpm_calls == 2
    assert firm.states.states[f"client#{stuck.uuid}"].problems[0].runs == 2

    # When the admin adds the partner in Active alone, the next run syncs it
    firm.active.add_user(outsider.email or "")
    third = run(firm)

    assert third.counts["client"]["created"] == 1
    assert f"client#{stuck.uuid}" not in firm.states.states
    assert "PARTNER_NOT_IN_ACTIVE" in [problem.code for problem in firm.states.fixed]


def test_hourly_runs_starting_a_little_sooner_or_later_in_their_hour_still_read_everything_daily(
    firm: Firm,
) -> None:
    """The probe of 2026-12-07: the full read was due only 24 hours to the second after the last,
    so a run starting a second sooner in its hour a day later let it slip an hour, day after day."""
    firm.xpm.clients.append(client(partner=with_partner(firm)))
    starts_in_hour = [12, 3, 9, 2, 11, 5]  # seconds after the hour, as the schedule delivers them
    full_reads = []
    for day in range(6):
        for hour in range(24):
            firm.clock.moment = START + timedelta(days=day, hours=hour, seconds=starts_in_hour[day])
            result = sync(firm)
            assert result is not None
            if result.run.full_read:
                full_reads.append((day, hour))

    assert full_reads == [(day, 0) for day in range(6)], "one a day, at the same hour"


def test_the_full_read_drops_retries_of_records_xpm_no_longer_lists(firm: Firm) -> None:
    firm.xpm.clients.append(client(partner=None))  # no partner, no default partner
    run(firm)
    assert [key for key in firm.states.states if key.startswith("client#")]
    firm.xpm.clients.clear()
    firm.clock.advance(hours=24)

    daily = run(firm)

    assert daily.full_read is True
    assert not [key for key in firm.states.states if key.startswith("client#")]
    assert "PARTNER_MISSING" in {problem.code for problem in firm.states.fixed}


def test_the_same_uuid_twice_in_one_answer_syncs_the_first_and_reports_each_later_one(firm: Firm) -> None:
    partner = with_partner(firm)
    first = client("DUP1", partner=partner)
    firm.xpm.clients += [first, first.model_copy(update={"name": "Second copy"}), first.model_copy()]

    done = run(firm)

    assert done.counts["client"] == {"created": 1, "updated": 0, "unchanged": 0, "failed": 2, "skipped": 0}
    assert codes_of(firm).count("XPM_UUID_REPEATED") == 2
    firm.active.assert_no_two_clients_share_a_code_or_uuid()
    assert firm.states.states[f"client#{first.uuid}"].retry_copy is None, "dropped, not kept for a retry"


def test_one_record_too_large_for_active_fails_alone_and_the_others_are_written(firm: Firm) -> None:
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(10)]
    huge = client(partner=partner, name="N" * 450_000)
    firm.xpm.clients.insert(5, huge)

    done = run(firm)

    assert done.counts["client"]["created"] == 10
    assert done.counts["client"]["failed"] == 1
    assert len(firm.active.client_items) == 10
    entry = next(e for e in firm.runs.latest_entries() if e.code == "RECORD_TOO_LARGE")
    assert len(entry.label) <= 200
    assert len(entry.message) <= 1000
    assert firm.states.states[f"client#{huge.uuid}"].retry_copy is None


def test_records_with_a_value_too_long_to_read_fail_alone_as_too_large(firm: Firm) -> None:
    """The XML reader cuts off a value past its limit and flags the record (the probe of
    2026-12-07, evening: such a value failed the whole run, every run)."""
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner), client(partner=partner)]
    cut_off = client("CUT", partner=partner, oversized=True)
    firm.xpm.clients.insert(1, cut_off)
    cut_off_staff = staff("Long Email").model_copy(update={"email": None, "oversized": True})
    firm.xpm.staff.append(cut_off_staff)

    done = run(firm)

    assert done.status == "partial"
    assert done.counts["client"]["created"] == 2
    assert done.counts["client"]["failed"] == 1
    assert done.counts["user"]["failed"] == 1
    failed = {(e.code, e.xpm_uuid) for e in firm.runs.latest_entries()}
    assert failed == {("RECORD_TOO_LARGE", cut_off.uuid), ("RECORD_TOO_LARGE", cut_off_staff.uuid)}
    assert firm.states.states[f"client#{cut_off.uuid}"].retry_copy is None


def test_a_client_without_a_uuid_is_an_error_of_its_own(firm: Firm) -> None:
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner), client(partner=partner, uuid=""), client(partner=partner)]

    done = run(firm)

    assert done.status == "partial"
    assert done.counts["client"]["created"] == 2
    assert codes_of(firm) == ["CLIENT_UUID_MISSING"]


def test_a_client_sent_again_with_its_uuid_closes_the_problem_kept_by_its_label(firm: Firm) -> None:
    # The probe of 2026-12-07 (night): the problem stayed open after a successful run, until the
    # next daily full read (SPEC B6: it closes when a run syncs the record cleanly)
    partner = with_partner(firm)
    without_uuid = client("NOID", partner=partner, uuid="")
    firm.xpm.clients.append(without_uuid)
    run(firm)
    assert {key: state.codes for key, state in firm.states.states.items()} == {
        f"client#label#{client_label(without_uuid)}": {"CLIENT_UUID_MISSING"}
    }
    firm.clock.advance(hours=1)
    firm.xpm.clients.remove(without_uuid)
    firm.xpm.put(without_uuid.model_copy(update={"uuid": "uuid-noid"}), at=firm.clock.now())

    done = run(firm)

    assert done.status == "success"
    assert not done.full_read
    assert firm.states.states == {}
    assert [c.code for c in firm.states.fixed] == ["CLIENT_UUID_MISSING"]


def test_prospects_are_skipped_without_an_entry_and_a_linked_one_is_left_as_it_is(firm: Firm) -> None:
    partner = with_partner(firm)
    linked = client("P1", partner=partner)
    firm.xpm.clients.append(linked)
    run(firm)
    firm.xpm.put(linked.model_copy(update={"is_prospect": True, "name": "Renamed"}), at=firm.clock.now())
    firm.xpm.put(client(partner=None, client_code=None, is_prospect=True), at=firm.clock.now())

    done = run(firm)

    assert done.status == "success"
    assert done.counts["client"]["skipped"] == 2
    assert codes_of(firm) == []
    assert firm.active.clients_with(xpm_uuid=linked.uuid)[0]["legal_name"] == linked.name


def test_a_client_recreated_with_the_code_of_one_xpm_no_longer_lists_takes_its_client_back_at_the_full_read(
    firm: Firm,
) -> None:
    """The probe of 2026-12-08: a client deleted in XPM and gone from its list kept its code in
    Active for good, and the client re-created there with that code failed CLIENT_CODE_DUPLICATE
    at every run, naming a "duplicate" XPM no longer has. The daily full read reads XPM's whole list:
    a holder it does not send is gone, and SPEC A4's re-creation takes its Active client back."""
    partner = with_partner(firm)
    gone = client("THOM0003", partner=partner)
    firm.xpm.clients.append(gone)
    run(firm)
    (held,) = firm.active.client_items
    firm.xpm.clients.remove(gone)
    recreated = client("THOM0003", partner=partner, name="Thomas Super Fund")
    firm.xpm.put(recreated, at=firm.clock.now())

    hourly = run(firm)  # only the re-created client is in the answer: its holder may still be listed
    assert hourly.counts["client"]["failed"] == 1
    firm.configs.update(FIRM, last_full_read_started_at=None)  # the daily full read
    daily = run(firm)

    assert daily.counts["client"]["failed"] == 0
    assert [e.code for e in firm.runs.latest_entries() if e.xpm_uuid == recreated.uuid] == ["CLIENT_RELINKED"]
    assert list(firm.active.client_items) == [held], "no second client with the code"
    item = firm.active.client_items[held]
    assert (item["xpm_uuid"], item["code"], item["legal_name"]) == (
        recreated.uuid,
        "THOM0003",
        "Thomas Super Fund",
    )


def test_a_uuidless_copy_of_a_live_client_does_not_hand_its_active_client_to_a_duplicate(firm: Firm) -> None:
    """SPEC A4: of two XPM clients with one code the first syncs; a record sent without a UUID is an
    error of its own. The second read of 2026-12-08: in a full read where XPM sent the first without
    its UUID, its Active client counted as no longer listed and went to the duplicate."""
    partner = with_partner(firm)
    first = client("DUP01", partner=partner, name="First Holdings Pty Ltd")
    firm.xpm.clients.append(first)
    run(firm)
    second = client("DUP01", partner=partner, name="Second Holdings Pty Ltd")
    firm.xpm.put(second, at=firm.clock.now())
    run(firm)
    assert "CLIENT_CODE_DUPLICATE" in codes_of(firm)
    firm.xpm.clients = [first.model_copy(update={"uuid": ""}), second]
    firm.configs.update(FIRM, last_full_read_started_at=None)

    assert run(firm).full_read

    linked = {item["code"]: item["xpm_uuid"] for item in firm.active.client_items.values()}
    assert linked == {"DUP01": first.uuid}, "the first client keeps its Active record"


def test_an_unrelated_uuidless_record_does_not_stop_a_recreated_client_taking_its_client_back(
    firm: Firm,
) -> None:
    partner = with_partner(firm)
    gone = client("THOM0003", partner=partner)
    firm.xpm.clients.append(gone)
    run(firm)
    (held,) = firm.active.client_items
    firm.xpm.clients.remove(gone)  # deleted in XPM: no longer listed
    recreated = client("THOM0003", partner=partner, name="Thomas Super Fund")
    # An unrelated client, with another code, that XPM sends without its UUID
    broken = client("ZZZ999", partner=partner, name="Unrelated Pty Ltd").model_copy(update={"uuid": ""})
    firm.xpm.clients += [recreated, broken]
    firm.configs.update(FIRM, last_full_read_started_at=None)  # the daily full read

    daily = run(firm)

    assert daily.full_read
    by_uuid = {e.xpm_uuid: e.code for e in firm.runs.latest_entries() if e.xpm_uuid}
    assert by_uuid.get(recreated.uuid) == "CLIENT_RELINKED", by_uuid
    assert firm.active.client_items[held]["xpm_uuid"] == recreated.uuid


def test_a_preview_with_another_default_partner_changes_no_sync_state(firm: Firm) -> None:
    """SPEC B6: a dry run changes no sync state: a preview under another Default Partner made the
    next hourly run read every client though the admin changed it back (the second read of
    2026-12-08)."""
    first_partner = firm.active.add_user("first@harbour.example")
    firm.active.add_office(OFFICE, default_partner_user_id=first_partner)
    firm.xpm.clients += [client(partner=None) for _ in range(3)]
    run(firm)
    firm.active.add_office(OFFICE, default_partner_user_id=firm.active.add_user("second@harbour.example"))
    preview(firm)
    firm.active.add_office(OFFICE, default_partner_user_id=first_partner)

    assert firm.config.full_read_owed is False
    assert not run(firm).full_read


def test_a_client_moved_onto_the_code_of_one_xpm_no_longer_lists_is_told_so(firm: Firm) -> None:
    partner = with_partner(firm)
    gone, mover = client("OLD01", partner=partner), client("MOVE01", partner=partner)
    firm.xpm.clients += [gone, mover]
    run(firm)
    firm.xpm.clients.remove(gone)
    firm.xpm.put(mover.model_copy(update={"client_code": "OLD01"}), at=firm.clock.now())
    firm.configs.update(FIRM, last_full_read_started_at=None)

    run(firm)

    (entry,) = [e for e in firm.runs.latest_entries() if e.xpm_uuid == mover.uuid]
    assert entry.code == "CLIENT_CODE_TAKEN"
    assert "which XPM no longer lists" in entry.message


def test_a_client_recreated_in_xpm_with_an_archived_clients_code_takes_its_active_client_back(
    firm: Firm,
) -> None:
    partner, old = synced_then_archived(firm, "ACME")
    recreated = client("ACME", partner=partner, name="Acme Holdings Pty Ltd")
    firm.xpm.put(recreated, at=firm.clock.now())

    done = run(firm)

    assert len(firm.active.client_items) == 1, "the old record is never duplicated"
    item = next(iter(firm.active.client_items.values()))
    assert item["xpm_uuid"] == recreated.uuid
    assert item["xpm_archived"] is False
    assert item["legal_name"] == "Acme Holdings Pty Ltd"
    relinked = [e for e in firm.runs.latest_entries() if e.code == "CLIENT_RELINKED"]
    assert len(relinked) == 1
    assert relinked[0].severity == "warning"
    assert old.uuid in relinked[0].message
    assert done.status == "success"


def test_a_code_changed_before_archiving_follows_and_frees_the_old_code(firm: Firm) -> None:
    """The probe of 2026-12-07 (evening): the archived client kept its old code in Active, so the
    next client given that code took the archived client's Active record as a re-creation, and a
    client moved onto it failed CLIENT_CODE_TAKEN every run."""
    partner = with_partner(firm)
    old, mover = client("ACME", partner=partner), client("BETA", partner=partner)
    firm.xpm.clients += [old, mover]
    run(firm)
    [old_id] = [cid for cid, item in firm.active.client_items.items() if item["xpm_uuid"] == old.uuid]
    archive(firm, old, client_code="ACME-OLD")

    run(firm)

    assert firm.active.client_items[old_id]["code"] == "ACME-OLD"
    assert firm.active.client_items[old_id]["xpm_archived"] is True
    newcomer = client("ACME", partner=partner, name="Unrelated Newco Pty Ltd")
    firm.xpm.put(newcomer, at=firm.clock.now())
    renumber(firm, mover, "ACME-2")
    done = run(firm)

    assert done.status == "success", codes_of(firm)
    assert "CLIENT_RELINKED" not in codes_of(firm)
    assert firm.active.client_items[old_id]["xpm_uuid"] == old.uuid
    assert firm.active.clients_with(xpm_uuid=newcomer.uuid)[0]["code"] == "ACME"
    firm.active.assert_no_two_clients_share_a_code_or_uuid()


def test_a_client_moved_onto_the_code_an_archived_client_gave_up_takes_it(firm: Firm) -> None:
    partner = with_partner(firm)
    old, mover = client("ACME", partner=partner), client("BETA", partner=partner)
    firm.xpm.clients += [old, mover]
    run(firm)
    # One hour's changes, the mover listed first: it waits for the archived client's code.
    renumber(firm, mover, "ACME")
    archive(firm, old, client_code="ACME-OLD")
    assert [c.uuid for c in firm.xpm.clients] == [mover.uuid, old.uuid]

    done = run(firm)

    assert done.status == "success", codes_of(firm)
    assert firm.active.clients_with(xpm_uuid=mover.uuid)[0]["code"] == "ACME"
    assert firm.active.clients_with(xpm_uuid=old.uuid)[0]["code"] == "ACME-OLD"
    firm.active.assert_no_two_clients_share_a_code_or_uuid()


def test_a_new_client_listed_before_an_archived_one_that_gave_up_its_code_waits_for_it(
    firm: Firm,
) -> None:
    partner, old = synced_then_archived(firm, "ACME")
    # Archived under ACME; then given another code in XPM, and a new client takes ACME.
    newcomer = client("ACME", partner=partner, name="Unrelated Newco Pty Ltd")
    firm.xpm.clients = [newcomer, old.model_copy(update={"client_code": "ACME-OLD", "is_archived": True})]
    firm.xpm.modified = {c.uuid: firm.clock.now() for c in firm.xpm.clients}

    done = run(firm)

    assert done.status == "success", codes_of(firm)
    assert "CLIENT_RELINKED" not in codes_of(firm)
    assert firm.active.clients_with(xpm_uuid=old.uuid)[0]["code"] == "ACME-OLD"
    assert firm.active.clients_with(xpm_uuid=newcomer.uuid)[0]["code"] == "ACME"


def test_codes_swapped_with_a_client_archived_at_the_same_time_move_in_one_transaction(firm: Firm) -> None:
    live, leaving = synced_clients(firm, "A1", "B1")
    renumber(firm, live, "B1")
    archive(firm, leaving, client_code="A1")

    done = run(firm)

    assert done.status == "success", codes_of(firm)
    assert firm.active.writes["transaction"] == 1
    assert firm.active.clients_with(xpm_uuid=live.uuid)[0]["code"] == "B1"
    archived = firm.active.clients_with(xpm_uuid=leaving.uuid)[0]
    assert (archived["code"], archived["xpm_archived"]) == ("A1", True)


def test_a_swap_with_an_archived_client_never_leaves_a_code_free_for_a_newcomer(firm: Firm) -> None:
    """A review of the evening's change: the swap let each code go one client at a time, so the
    code the archived client took was free to the newcomer, and two clients shared it."""
    partner = with_partner(firm)
    archived, live = client("K1", partner=partner), client("K5", partner=partner)
    firm.xpm.clients += [archived, live]
    run(firm)
    archive(firm, archived)
    run(firm)
    firm.xpm.put(live.model_copy(update={"client_code": "K1"}), at=firm.clock.now())
    archive(firm, archived, client_code="K5")
    firm.xpm.put(client("K5", partner=partner, name="Newco Pty Ltd"), at=firm.clock.now())

    done = run(firm)

    assert done.status == "success", codes_of(firm)
    firm.active.assert_no_two_clients_share_a_code_or_uuid()
    assert firm.active.clients_with(xpm_uuid=live.uuid)[0]["code"] == "K1"


def test_an_archived_client_keeps_its_code_when_another_client_holds_the_new_one(firm: Firm) -> None:
    partner = with_partner(firm)
    old, other = client("ACME", partner=partner), client("TAKEN", partner=partner)
    firm.xpm.clients += [old, other]
    run(firm)
    archive(firm, old, client_code="TAKEN")

    done = run(firm)

    assert done.status == "success", codes_of(firm)
    assert firm.active.clients_with(xpm_uuid=old.uuid)[0]["code"] == "ACME"
    assert firm.active.clients_with(xpm_uuid=old.uuid)[0]["xpm_archived"] is True
    firm.active.assert_no_two_clients_share_a_code_or_uuid()


def test_codes_swapped_in_xpm_move_in_one_transaction(firm: Firm) -> None:
    a, b = synced_clients(firm, "A1", "B1")
    renumber(firm, a, "B1")
    renumber(firm, b, "A1")

    done = run(firm)

    assert done.status == "success", codes_of(firm)
    assert firm.active.writes["transaction"] == 1
    assert firm.active.clients_with(xpm_uuid=a.uuid)[0]["code"] == "B1"
    assert firm.active.clients_with(xpm_uuid=b.uuid)[0]["code"] == "A1"


def test_codes_swapped_while_one_side_waits_for_a_retry_settle_when_it_is_fixed(firm: Firm) -> None:
    """The probe of 2026-12-07 (evening): the listed client's wait was settled before the retries
    ran, so both failed CLIENT_CODE_DUPLICATE, every run while the fixed one stayed in the window."""
    a, b = synced_clients(firm, "A1", "B1")
    firm.xpm.put(a.model_copy(update={"business_structure": None}), at=firm.clock.now())
    run(firm)  # a fails, and waits for a retry
    firm.xpm.put(a.model_copy(update={"business_structure": None, "client_code": "B1"}), at=firm.clock.now())
    renumber(firm, b, "A1")
    run(firm)  # a still fails; b waits for a's code, which a never gives up: b fails for now
    run(firm)

    # The practice fixes a: XPM sends it again, and b (a retry, or sent again in the window)
    firm.xpm.put(a.model_copy(update={"client_code": "B1"}), at=firm.clock.now())
    done = run(firm)

    assert done.status == "success", codes_of(firm)
    assert firm.active.clients_with(xpm_uuid=a.uuid)[0]["code"] == "B1"
    assert firm.active.clients_with(xpm_uuid=b.uuid)[0]["code"] == "A1"
    firm.active.assert_no_two_clients_share_a_code_or_uuid()


def test_a_swap_active_refuses_fails_both_on_the_conflict_and_they_retry(firm: Firm) -> None:
    a, b = synced_clients(firm, "A1", "B1")
    renumber(firm, a, "B1")
    renumber(firm, b, "A1")
    firm.active.refuse_swaps = True

    done = run(firm)

    assert done.counts["client"]["failed"] == 2
    assert set(codes_of(firm)) == {"CLIENT_CODE_TAKEN"}
    firm.active.assert_no_two_clients_share_a_code_or_uuid()
    firm.active.refuse_swaps = False
    assert run(firm).status == "success"
    assert firm.active.clients_with(xpm_uuid=a.uuid)[0]["code"] == "B1"


def test_a_chain_of_renumbered_codes_settles_in_list_order(firm: Firm) -> None:
    first, second = synced_clients(firm, "K1", "K2")
    # K1 -> K2 comes before K2 -> K3 in the list: K1's client waits for K2's to move.
    renumber(firm, first, "K2")
    renumber(firm, second, "K3")
    firm.xpm.clients.sort(key=lambda c: c.uuid != first.uuid)

    done = run(firm)

    assert done.status == "success", codes_of(firm)
    assert firm.active.clients_with(xpm_uuid=first.uuid)[0]["code"] == "K2"
    assert firm.active.clients_with(xpm_uuid=second.uuid)[0]["code"] == "K3"


def test_two_xpm_clients_with_one_code_sync_the_first_and_name_both_in_the_error(firm: Firm) -> None:
    partner = with_partner(firm)
    first, second = client("SAME", partner=partner, name="First Co"), client("SAME", partner=partner)

    firm.xpm.clients += [first, second]
    done = run(firm)

    assert done.counts["client"]["created"] == 1
    entry = next(e for e in firm.runs.latest_entries() if e.code == "CLIENT_CODE_DUPLICATE")
    assert entry.xpm_uuid == second.uuid
    assert "First Co" in entry.message


def test_a_look_alike_of_an_unlinked_active_client_waits_for_the_admins_answer(firm: Firm) -> None:
    partner = with_partner(firm)
    xpm_client = client("HS01", partner=partner, name="Harbour & Sons Pty. Limited")
    firm.xpm.clients.append(xpm_client)
    trial_id = firm.active.add_client(legal_name="harbour and sons pty ltd")

    first = run(firm)

    assert first.counts["client"]["skipped"] == 1
    assert len(firm.active.client_items) == 1, "never created, never linked by itself"
    suggestion = firm.matches.suggestions[xpm_client.uuid]
    assert (suggestion.client_id, suggestion.reason) == (trial_id, "name")
    assert codes_of(firm) == ["NEAR_MATCH"]

    # The admin answers "link": the next run links it and writes its code from XPM.
    firm.matches.answer(xpm_client.uuid, "link")
    second = run(firm)

    assert second.counts["client"]["updated"] == 1
    assert firm.active.client_items[trial_id]["xpm_uuid"] == xpm_client.uuid
    assert firm.active.client_items[trial_id]["code"] == "HS01"
    assert xpm_client.uuid not in firm.matches.suggestions


def test_a_preview_plans_two_link_answers_naming_one_client_as_the_run_does(firm: Firm) -> None:
    # The probe of 2026-12-07 (night): the preview linked both (a dry run writes nothing, so the
    # client still read as unlinked for the second); the real run links the first only.
    partner = with_partner(firm)
    first = client("HS01", partner=partner, name="Harbour & Sons Pty Ltd")
    second = client("HS02", partner=partner, name="Harbour Partners Pty Ltd")
    firm.xpm.clients += [first, second]
    trial_id = firm.active.add_client(legal_name="Harbour & Sons Pty Ltd")
    firm.active.add_client(legal_name="Harbour Partners Pty Ltd")
    run(firm)
    for waiting in (first, second):
        firm.matches.suggestions[waiting.uuid] = replace(
            firm.matches.suggestions[waiting.uuid], client_id=trial_id, answer="link"
        )
    firm.configs.update(FIRM, last_full_read_started_at=None)

    planned = preview(firm)
    done = run(firm)

    # (a preview counts a link as linked, where the run counts it updated)
    assert done.counts["client"]["updated"] == 1
    assert planned.counts["client"] == {**done.counts["client"], "updated": 0, "linked": 1}
    assert firm.active.client_items[trial_id]["xpm_uuid"] == first.uuid
    assert [c.get("xpm_uuid") for c in firm.active.client_items.values()].count(second.uuid) <= 1


def test_a_suggested_link_goes_once_the_full_read_no_longer_finds_its_record(firm: Firm) -> None:
    # Given a look-alike waiting for the admin's answer, then deleted in XPM (the probe of
    # 2026-12-07: its suggestion stayed for ever, offered and answerable, with nothing to apply it)
    partner = with_partner(firm)
    look_alike = client(partner=partner, name="Look Alike Pty Ltd")
    firm.xpm.clients.append(look_alike)
    firm.active.add_client(legal_name="Look Alike Pty Ltd")
    run(firm)
    assert look_alike.uuid in firm.matches.suggestions
    firm.xpm.clients.remove(look_alike)

    # When hourly runs go, it waits (they read only what changed); the daily full read drops it
    run(firm)
    assert look_alike.uuid in firm.matches.suggestions
    firm.configs.update(FIRM, last_full_read_started_at=None)
    assert run(firm).full_read

    assert look_alike.uuid not in firm.matches.suggestions
    assert firm.states.open_codes() == {}


def test_an_hourly_run_links_a_client_entered_by_hand_with_the_code_capitalised(firm: Firm) -> None:
    # Given a firm synced once, then a client entered by hand as "Abc01", and XPM's "ABC01" new
    # (the probe of 2026-12-07: the hourly run tried "ABC01" and "abc01" only, and duplicated it)
    partner = with_partner(firm)
    run(firm)
    by_hand = firm.active.add_client(code="Abc01", legal_name="Abc Trading")
    xpm_client = client("ABC01", partner=partner, name="ABC Trading Pty Ltd")
    firm.xpm.put(xpm_client, at=firm.clock.now())

    done = run(firm)

    assert not done.full_read
    assert [item["client_id"] for item in firm.active.clients_with(xpm_uuid=xpm_client.uuid)] == [by_hand]
    assert len(firm.active.client_items) == 1


def test_a_client_entered_by_hand_beside_a_linked_one_with_its_code_takes_nothing_from_it(
    firm: Firm,
) -> None:
    # Given two Active clients with one code, case aside: "AbC01" entered by hand (met first by the
    # full read) and "ABC01" linked to XPM (the probe of 2026-12-07: the linked one failed every
    # daily full read with CLIENT_CODE_TAKEN, and was retried clean an hour later)
    partner = with_partner(firm)
    xpm_client = client("ABC01", partner=partner)
    firm.xpm.clients.append(xpm_client)
    firm.active.add_client(code="AbC01", legal_name="By Hand")
    linked = firm.active.add_client(code="ABC01", legal_name=xpm_client.name, xpm_uuid=xpm_client.uuid)

    done = run(firm)

    assert done.full_read
    assert done.status == "success", codes_of(firm)
    assert firm.active.client_items[linked]["code"] == "ABC01"


def test_an_answer_of_create_makes_a_new_client_beside_the_look_alike(firm: Firm) -> None:
    partner = with_partner(firm)
    xpm_client = client("X1", partner=partner, business_number="51 824 753 556")
    firm.xpm.clients.append(xpm_client)
    firm.active.add_client(legal_name="Something Else", abn="51824753556")
    run(firm)
    assert firm.matches.suggestions[xpm_client.uuid].reason == "abn"

    firm.matches.answer(xpm_client.uuid, "create")
    done = run(firm)

    assert done.counts["client"]["created"] == 1
    assert len(firm.active.client_items) == 2


def test_a_preview_plans_the_first_sync_and_writes_nothing(firm: Firm) -> None:
    partner = with_partner(firm)
    firm.xpm.staff.append(staff("Sam Staff"))
    firm.xpm.clients += [client(partner=partner) for _ in range(3)]
    firm.xpm.clients.append(client("HAND", partner=partner))
    firm.active.add_client(code="HAND", legal_name="Hand Made")
    firm.xpm.clients.append(client(partner=partner, name="Look Alike"))
    firm.active.add_client(legal_name="Look-Alike")
    firm.xpm.clients.append(client(partner=None))
    before = {k: dict(v) for k, v in firm.active.client_items.items()}, dict(firm.active.user_items)

    planned = preview(firm)

    assert planned.dry_run is True
    assert planned.status == "partial"
    assert planned.counts["client"] == {
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "failed": 1,
        "skipped": 1,
        "linked": 1,
    }
    assert planned.counts["user"]["created"] == 1
    # The partner user with_partner added in Active, matched by email: linked, as clients are.
    assert (planned.counts["user"]["linked"], planned.counts["user"]["updated"]) == (1, 0)
    assert set(codes_of(firm)) == {"NEAR_MATCH", "PARTNER_MISSING"}
    assert ({k: dict(v) for k, v in firm.active.client_items.items()}, firm.active.user_items) == before
    assert firm.states.states == {}
    assert firm.states.writes == 0
    # Its look-alike waits as a suggestion, for the admin to answer before the first sync
    assert [s.reason for s in firm.matches.suggestions.values()] == ["name"]
    assert firm.config.last_completed_run_started_at is None
    assert firm.notifier.sent == []


def test_a_preview_reports_oversized_records_and_counts_a_link_to_an_archived_client_as_linked(
    firm: Firm,
) -> None:
    """The probe of 2026-12-07: the size check ran only on writes, which a preview never makes, and a
    hand-made client linked to an archived XPM client by its code was counted ``updated``."""
    # Given a staff member and a client too large for Active, and a client entered by hand whose
    # code an archived XPM client holds
    partner = with_partner(firm)
    huge_staff = staff("N" * 450_000 + " Smith")
    firm.xpm.staff.append(huge_staff)
    huge = client(partner=partner, name="N" * 450_000)
    archived = client("ARCH", partner=partner, is_archived=True)
    firm.xpm.clients += [huge, archived, client(partner=partner)]
    firm.active.add_client(code="ARCH", legal_name="Archived By Hand")

    # When the admin previews the first sync, and then runs it
    planned = preview(firm)
    planned_entries = {(e.code, e.entity, e.xpm_uuid) for e in firm.runs.latest_entries()}
    done = run(firm)

    # Then the preview reports what the run did, and counts the link apart
    assert planned_entries == {(e.code, e.entity, e.xpm_uuid) for e in firm.runs.latest_entries()}
    assert ("RECORD_TOO_LARGE", "client", huge.uuid) in planned_entries
    assert ("RECORD_TOO_LARGE", "user", huge_staff.uuid) in planned_entries
    assert planned.counts["client"] == {**done.counts["client"], "updated": 0, "linked": 1}
    assert done.counts["client"]["updated"] == 1
    assert planned.counts["user"]["failed"] == done.counts["user"]["failed"] == 1


@pytest.mark.parametrize(
    "beside_a_client_without_uuid", [False, True], ids=["alone", "beside a UUID-less client"]
)
def test_a_suggestion_a_preview_made_goes_when_xpm_stops_listing_its_record(
    firm: Firm, beside_a_client_without_uuid: bool
) -> None:
    """SPEC B6: a problem closes when XPM no longer lists its record, and its suggested link with
    it. The probe of 2026-12-08: one a preview made (before the first sync) has no record state for
    the full read to drop it with, and GET matches offered it for good; and the second read's fix
    kept it for good again while XPM sent an unrelated client without its UUID."""
    partner = with_partner(firm)
    look_alike = client(partner=partner, name="Look Alike Pty Ltd")
    other = client("ZZZ999", partner=partner, name="Unrelated Pty Ltd")
    if beside_a_client_without_uuid:
        other = other.model_copy(update={"uuid": ""})
    firm.xpm.clients += [look_alike, other]
    firm.active.add_client(legal_name="Look Alike Pty Ltd")
    preview(firm)
    assert look_alike.uuid in firm.matches.suggestions
    firm.xpm.clients.remove(look_alike)

    assert run(firm).full_read

    assert look_alike.uuid not in firm.matches.suggestions


def test_a_client_only_its_office_code_pushes_over_the_item_limit_is_planned_as_the_run_fails_it(
    firm: Firm,
) -> None:
    """The probe of 2026-12-08: the preview's size check left out the ``office_code`` the real
    creation adds, so a client within a few bytes of DynamoDB's limit was planned as created."""
    partner = with_partner(firm)

    def fits_alone(name_length: int) -> bool:
        values = client_values(
            map_client(client("BIG1", partner=partner, name="N" * name_length)).fields,  # type: ignore[arg-type]
            xpm_uuid="client-big",
            partner_user_id="user-1",
            manager_user_id=None,
        )
        return item_size({k: v for k, v in values.items() if v is not None}) <= MAX_ITEM_BYTES

    low, high = 0, MAX_ITEM_BYTES
    while low < high:  # the longest name whose synced values alone fit
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits_alone(middle) else (low, middle - 1)
    firm.xpm.clients.append(client("BIG1", partner=partner, name="N" * low, uuid="client-big"))

    preview(firm)
    planned = {(e.code, e.xpm_uuid) for e in firm.runs.latest_entries()}
    run(firm)

    assert ("RECORD_TOO_LARGE", "client-big") in {(e.code, e.xpm_uuid) for e in firm.runs.latest_entries()}
    assert ("RECORD_TOO_LARGE", "client-big") in planned


def test_a_preview_that_meets_an_outage_is_not_delivered_again_nor_counted_by_the_operators(
    firm: Firm, capsys: pytest.CaptureFixture[str]
) -> None:
    """The probe of 2026-12-07: a preview failed by XPM asked SQS for a retry, which held the firm's
    message group (Start Sync and the hourly run too) for the queue's 90-minute visibility timeout,
    only to be ignored as stale; and its planned records and failure went to the run metrics."""
    firm.xpm.clients.append(client(partner=with_partner(firm)))
    firm.xpm.break_after = (0, XpmUnavailable("down"))

    capsys.readouterr()
    result = dry_run(firm)
    metrics = capsys.readouterr().out  # the EMF documents are printed, not logged

    assert result.run.status == "failed"
    assert [e.code for e in firm.runs.latest_entries()] == ["XPM_UNAVAILABLE"]
    assert result.transient is False, "SQS is not asked to deliver the preview again"
    assert '"_aws"' not in metrics, "no run metrics for a preview"
    # A real run meeting the same outage is still delivered again, and counted
    real = sync(firm)
    assert real is not None
    assert real.transient is True
    assert '"XpmUnavailableRuns":[1.0]' in capsys.readouterr().out


def test_a_connection_owner_no_longer_in_xpms_staff_list_is_a_run_level_warning(firm: Firm) -> None:
    with_partner(firm)
    firm.configs.update(FIRM, connected_by_email="owner@harbour.example")

    done = run(firm)

    assert done.status == "success"
    assert codes_of(firm) == ["CONNECTION_OWNER_NOT_IN_XPM"]
    firm.xpm.staff.append(staff("Olive Owner", "Owner@Harbour.example"))
    run(firm)
    assert codes_of(firm) == []
    assert "run" not in firm.states.states, "the run-level problem closed at the next run without it"


def test_a_run_that_stops_before_a_run_level_check_leaves_its_problem_open_as_it_was(firm: Firm) -> None:
    """The probe of 2026-12-07: a run failed at the staff list closed CONNECTION_OWNER_NOT_IN_XPM
    (counted fixed) without looking, and the next run opened it again as new."""
    firm.configs.update(FIRM, connected_by_email="gone@harbour.example")
    first = run(firm)
    [opened] = firm.states.states["run"].problems

    def xpm_down() -> list[Any]:
        raise XpmUnavailable("down")

    firm.xpm.list_staff = xpm_down  # type: ignore[method-assign]
    assert run(firm).status == "failed"
    firm.xpm.list_staff = FakeXpm.list_staff.__get__(firm.xpm)  # type: ignore[method-assign]
    still = {p.code: p for p in firm.states.states["run"].problems}["CONNECTION_OWNER_NOT_IN_XPM"]
    assert still == opened, "neither seen again nor closed"
    assert "CONNECTION_OWNER_NOT_IN_XPM" not in [closed.code for closed in firm.states.fixed]

    third = run(firm)
    [again] = firm.states.states["run"].problems
    assert (again.code, again.first_seen, again.runs) == (opened.code, first.started_at, 2)
    assert third.status == "success"
    assert [closed.code for closed in firm.states.fixed] == ["XPM_UNAVAILABLE"]


def test_a_changed_default_partner_reaches_the_clients_that_use_it_at_the_next_run(firm: Firm) -> None:
    # The probe of 2026-12-07 (night): clients with no Partner in XPM are in no incremental answer,
    # so they kept the old Default Partner until the daily full read, Start Sync or not (SPEC A2)
    first_partner = firm.active.add_user("first@harbour.example")
    firm.active.add_office(OFFICE, default_partner_user_id=first_partner)
    firm.xpm.clients += [client(partner=None) for _ in range(3)]
    run(firm)
    assert {c["partner_user_id"] for c in firm.active.client_items.values()} == {first_partner}
    assert not run(firm).full_read, "nothing changed: the hourly run reads what XPM changed"

    second_partner = firm.active.add_user("second@harbour.example")
    firm.active.add_office(OFFICE, default_partner_user_id=second_partner)
    done = run(firm, trigger="manual")

    assert done.full_read
    assert done.counts["client"]["updated"] == 3
    assert {c["partner_user_id"] for c in firm.active.client_items.values()} == {second_partner}
    assert not run(firm).full_read, "once applied, the hourly runs go back to what XPM changed"


def test_a_default_partner_undone_after_a_full_read_that_stopped_part_way_is_read_again(firm: Firm) -> None:
    """The probe of 2026-12-08: the full read for a new Default Partner stopped after its first
    batch, the admin undid the change, and the next run, seeing the recorded Default Partner again,
    read only what XPM changed: the clients the stopped read reached kept a partner the firm no
    longer gives, with no problem open, until the daily full read."""
    firm.xpm.clients += [client(partner=None) for _ in range(150)]
    assert run(firm).counts["client"]["failed"] == 150  # PARTNER_MISSING: no Default Partner
    partner = firm.active.add_user("dp@harbour.example")
    firm.active.add_office(OFFICE, default_partner_user_id=partner)
    firm.xpm.break_after = (120, XpmUnavailable("down"))
    stopped = run(firm, trigger="manual")
    assert stopped.full_read
    assert stopped.status == "failed"
    reached = [item for item in firm.active.client_items.values() if item.get("partner_user_id") == partner]
    assert reached, "the first batch was applied before XPM went down"

    firm.xpm.break_after = None
    firm.active.add_office(OFFICE, default_partner_user_id=None)  # undone
    done = run(firm)

    assert done.full_read
    assert done.counts["client"]["failed"] == 150, "each says its partner is missing, those reached too"
    assert not run(firm).full_read, "once read whole, the hourly runs go back to what XPM changed"


def a_client_whose_manager_has_no_active_user(firm: Firm) -> tuple[XpmStaff, XpmClientRecord]:
    """A Manager with a one-word name in XPM: no Active user can be made for them."""
    manager = staff("Mononym", "mono@harbour.example", uuid="staff-mono")
    firm.xpm.staff.append(manager)
    record = client(partner=with_partner(firm), job_manager_uuid=manager.uuid)
    firm.xpm.clients.append(record)
    run(firm)
    assert [e.code for e in firm.runs.latest_entries() if e.xpm_uuid == record.uuid] == [
        "MANAGER_NOT_IN_ACTIVE"
    ]
    return manager, record


def test_a_manager_added_to_active_as_the_warning_suggests_is_set_by_the_next_run(firm: Firm) -> None:
    """SPEC A7: fixing the cause in Active alone is enough. The probe of 2026-12-08: the Manager was
    set, and the warning closed, only at the daily full read (warned clients kept no copy)."""
    manager, record = a_client_whose_manager_has_no_active_user(firm)
    user_id = firm.active.add_user(manager.email or "", first_name="Mono", last_name="Nym")

    done = run(firm)

    assert not done.full_read
    assert firm.xpm.calls == 2, "no XPM call for it: the copy XPM last sent"
    (item,) = [item for item in firm.active.client_items.values() if item.get("xpm_uuid") == record.uuid]
    assert item["manager_user_id"] == user_id
    assert f"client#{record.uuid}" not in firm.states.states, "the warning closed"


def test_clients_warned_of_their_manager_are_not_applied_again_while_nobody_changes(firm: Firm) -> None:
    a_client_whose_manager_has_no_active_user(firm)

    done = run(firm)

    assert not done.full_read
    assert sum(done.counts["client"].values()) == 0, "nothing read or applied for them"
    assert [e.code for e in firm.runs.latest_entries()] == ["STAFF_SURNAME_MISSING"]


def test_a_config_that_never_recorded_its_default_partner_reads_no_more_than_before(firm: Firm) -> None:
    # A config written before the last full read recorded it: no full read forced on deploy
    firm.active.add_office(OFFICE, default_partner_user_id=firm.active.add_user("dp@harbour.example"))
    firm.xpm.clients.append(client(partner=None))
    run(firm)
    firm.configs.update(FIRM, full_read_inputs=None)

    assert not run(firm).full_read


def test_a_default_partner_who_is_no_longer_a_user_is_a_run_level_error(firm: Firm) -> None:
    firm.active.add_office(OFFICE, default_partner_user_id="user-gone")
    firm.xpm.clients.append(client(partner=None))

    done = run(firm)

    assert done.status == "partial"
    assert set(codes_of(firm)) == {"DEFAULT_PARTNER_NOT_IN_ACTIVE", "PARTNER_MISSING"}


@pytest.mark.parametrize(
    "failure",
    [XpmUnavailable("down"), XpmBadResponse("XPM answered ERROR: An error has occurred")],
    ids=["a transient outage", "an answer XPM keeps sending unreadable"],
)
def test_a_failure_only_xpm_can_clear_emails_only_from_the_third_in_a_row(
    firm: Firm, failure: Exception
) -> None:
    """The probe of 2026-12-07 (evening): failures only XPM or an operator can clear (an answer
    that cannot be read, the app's own credentials) emailed the admin at the first run."""
    with_partner(firm)
    firm.xpm.staff.append(staff("Olive Owner", "owner@harbour.example"))
    run(firm)  # a completed run
    firm.xpm.break_after = (0, failure)
    firm.xpm.clients.append(client())

    for attempt in range(1, 4):
        done = run(firm)
        assert done.status == "failed"
        assert len(firm.notifier.sent) == (1 if attempt == 3 else 0), attempt


@pytest.mark.parametrize("code", sorted(SYSTEM_FAULT_CODES))
def test_a_system_fault_waits_and_a_firm_problem_is_told_at_once(code: str) -> None:
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    recent = "2026-03-02T11:00:00Z"

    def told(failure: str, in_a_row: int) -> bool:
        return should_notify(
            "failed",
            failure,
            failures_in_a_row=in_a_row,
            expected_to_sync_since=recent,
            now=now,
        )

    assert not told(code, 1)
    assert told(code, 3)
    assert all(told(firm_code, 1) for firm_code in FIRM_PROBLEM_CODES)


class _WorkerStopped(BaseException):
    """What the runtime does to a worker past its timeout: nothing of the run's own code runs."""


def _a_run_the_runtime_stopped(firm: Firm) -> SyncRun:
    """A firm of three clients synced once, then a run killed by the runtime after one client: the
    run it left ``running``."""
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(3)]
    run(firm)
    firm.xpm.break_after = (1, _WorkerStopped())
    with pytest.raises(_WorkerStopped):
        sync(firm)
    firm.xpm.break_after = None
    [stopped] = [r for r in firm.runs.runs.values() if r.status == "running"]
    return stopped


def test_a_notification_user_still_gone_counts_every_run_that_looked(firm: Firm) -> None:
    """A review of 2026-12-07 (evening): the run's first write kept the problem unjudged and marked
    it seen, so the write after the email counted it for no run: it stayed at 1."""
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner, business_structure=None)]
    firm.notifier.no_recipient = True

    for _ in range(3):
        assert run(firm).status == "partial"

    [problem] = firm.states.states["run"].problems
    assert (problem.code, problem.runs) == ("NOTIFICATION_USER_INVALID", 3)


def test_runs_stopped_by_the_runtime_count_as_failures_in_a_row_and_are_told_from_the_third(
    firm: Firm,
) -> None:
    """The probe of 2026-12-07 (evening): runs killed hour after hour never led to an email, and
    their INTERNAL_ERROR never became an open problem."""
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(3)]
    run(firm)
    firm.xpm.break_after = (1, _WorkerStopped())

    told = []
    for _ in range(4):  # within the hour: "no completed run for 3 hours" does not come into it
        with pytest.raises(_WorkerStopped):
            sync(firm)
        told.append(len(firm.notifier.sent))
    firm.xpm.break_after = None
    done = run(firm)

    # Each start closes the run before it: the third closed is the third failure in a row.
    assert told == [0, 0, 0, 1]
    closed = [r for r in firm.runs.runs.values() if r.status == "failed"]
    assert len(closed) == 4
    assert done.status == "success"
    assert firm.config.transient_failures_in_a_row == 0
    assert firm.states.open_codes().get("run") is None, "closed by the run that completed"
    assert any(p.code == "INTERNAL_ERROR" for p in firm.states.fixed), "and counted as fixed"


def test_a_run_stopped_months_ago_is_left_to_expire_not_reported_as_news(firm: Firm) -> None:
    """The TTL probe of 2026-12-07: a run killed just before the firm went away (disconnected, or
    needing to reconnect) was ended by the first run 95 days on, past its TTL: kept 90 days more,
    an INTERNAL_ERROR months old opened and closed, and the next email counted it as fixed."""
    # Given a run stopped by the runtime, then 95 days in which the firm did not sync
    stopped = _a_run_the_runtime_stopped(firm)
    firm.clock.advance(days=95)

    # When the firm's next run goes
    done = run(firm)

    # Then that run is left as it was, for DynamoDB to delete, and reported nowhere
    assert done.status == "success"
    assert firm.runs.runs[stopped.run_id].status == "running"
    assert firm.runs.runs[stopped.run_id].finished_at is None
    assert not any(p.code == "INTERNAL_ERROR" for p in firm.states.fixed)
    assert firm.states.open_codes().get("run") is None
    assert firm.config.transient_failures_in_a_row == 0


@pytest.mark.parametrize("since", ["disconnected", "paused"])
def test_a_killed_run_of_a_firm_that_runs_no_more_is_closed_by_its_last_message(
    firm: Firm, since: str
) -> None:
    # The probe of 2026-12-07 (night): a run killed, then Disconnect (or a reconnect that paused the
    # sync): the killed message came back, found nothing to run and left running_run_id, and after
    # a reconnect Start Sync answered 429 "a sync is running" for six hours
    stopped = _a_run_the_runtime_stopped(firm)
    if since == "disconnected":
        firm.configs.update(FIRM, status="disconnected", sync_enabled=False)
    else:
        firm.configs.update(FIRM, sync_enabled=False, tenant_id=None)

    assert sync(firm) is None  # the killed message, delivered again

    assert firm.config.running_run_id is None
    assert firm.runs.runs[stopped.run_id].status == "failed"
    assert [e.code for e in firm.runs.entries[stopped.run_id]] == ["INTERNAL_ERROR"]


def test_a_killed_run_between_two_outages_keeps_the_count_going(firm: Firm) -> None:
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(3)]
    run(firm)
    firm.xpm.break_after = (1, XpmUnavailable("down"))
    sync(firm)
    firm.xpm.break_after = (1, _WorkerStopped())
    with pytest.raises(_WorkerStopped):
        sync(firm)
    firm.xpm.break_after = (1, XpmUnavailable("down"))

    done = run(firm)

    assert done.status == "failed"
    assert firm.config.transient_failures_in_a_row == 3
    assert len(firm.notifier.sent) == 1, "the third self-clearing failure in a row"
    assert firm.states.open_codes()["run"] == {"XPM_UNAVAILABLE"}


def test_a_notification_user_that_is_gone_is_an_open_problem_until_an_email_finds_one(firm: Firm) -> None:
    """The probe of 2026-12-07 (evening): NOTIFICATION_USER_INVALID was in the run's log only."""
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner), client(partner=partner, business_structure=None)]
    firm.notifier.no_recipient = True

    first = run(firm)

    assert first.status == "partial"
    assert firm.states.open_codes()["run"] == {"NOTIFICATION_USER_INVALID"}
    # A run with nothing to tell looks the user up while the problem is open: still gone, still open.
    firm.xpm.put(
        firm.xpm.clients[1].model_copy(update={"business_structure": "Company"}), at=firm.clock.now()
    )
    assert run(firm).status == "success"
    assert firm.states.open_codes()["run"] == {"NOTIFICATION_USER_INVALID"}
    assert firm.notifier.looked_up == 1
    # A run whose email failed before looking the user up judged nothing either.
    firm.notifier.broken = True
    firm.xpm.put(firm.xpm.clients[1].model_copy(update={"business_structure": None}), at=firm.clock.now())
    assert run(firm).status == "partial"
    assert "NOTIFICATION_USER_INVALID" in firm.states.open_codes()["run"]
    assert not any(p.code == "NOTIFICATION_USER_INVALID" for p in firm.states.fixed)
    firm.notifier.broken = False
    # The next run to tell the admin finds the user chosen again: closed.
    firm.notifier.no_recipient = False
    firm.xpm.put(firm.xpm.clients[1].model_copy(update={"business_structure": None}), at=firm.clock.now())
    assert run(firm).status == "partial"
    assert "run" not in firm.states.open_codes()
    assert len(firm.notifier.sent) == 1
    # ...closed just after that email, so the next one counts it fixed (it was closed at the
    # email's own moment, which the next email's "fixed since then" leaves out).
    [fix] = [p for p in firm.states.fixed if p.code == "NOTIFICATION_USER_INVALID"]
    assert firm.config.last_notified_at is not None
    assert fix.closed_at > firm.config.last_notified_at


def test_a_notification_user_chosen_again_closes_its_problem_at_the_next_run_with_nothing_to_tell(
    firm: Firm,
) -> None:
    # The probe of 2026-12-07 (night): it stayed open through any number of successful runs, until
    # a run had something to email (SPEC B6: a run-level problem closes at the next run that does
    # not report it)
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner), client(partner=partner, business_structure=None)]
    firm.notifier.no_recipient = True
    run(firm)
    assert firm.states.open_codes()["run"] == {"NOTIFICATION_USER_INVALID"}

    # When the admin fixes the record and chooses a notification user Active has
    firm.xpm.put(
        firm.xpm.clients[1].model_copy(update={"business_structure": "Company"}), at=firm.clock.now()
    )
    firm.notifier.no_recipient = False
    done = run(firm)

    # Then the successful run closes it, and emails nobody
    assert done.status == "success"
    assert "run" not in firm.states.open_codes()
    assert [p.code for p in firm.states.fixed] == ["BUSINESS_STRUCTURE_MISSING", "NOTIFICATION_USER_INVALID"]
    assert firm.notifier.sent == []
    # ... and later runs, with nothing open, look nobody up
    run(firm)
    assert firm.notifier.looked_up == 1


def test_a_passing_outage_at_the_first_run_after_a_late_start_sync_waits_like_any_other(firm: Firm) -> None:
    """The probe of 2026-12-08: a firm connected a day before the admin finished the setup (or
    saved it with Later for days) emailed at its first run's passing outage, the 3 hours of SPEC
    A5 counted from the connection. Start Sync starts the sync afresh."""
    firm.xpm.clients.append(client(partner=with_partner(firm)))
    firm.configs.update(FIRM, connected_at=iso(START - timedelta(days=1)), manual_requested_at=iso(START))
    firm.xpm.break_after = (0, XpmUnavailable("down"))

    assert run(firm, trigger="manual").status == "failed"

    assert firm.notifier.sent == []


def test_a_passing_outage_right_after_a_long_run_completed_waits_like_any_other(firm: Firm) -> None:
    """A run in parts that began 4 hours ago and completed a minute ago is a completed run within
    SPEC A5's 3 hours: they count from its end, not its start (the probe of 2026-12-08)."""
    firm.xpm.clients.append(client(partner=with_partner(firm)))
    run(firm)
    firm.configs.update(
        FIRM,
        connected_at=iso(START - timedelta(days=30)),
        last_completed_run_started_at=iso(START - timedelta(hours=4)),
    )
    assert firm.config.last_completed_run_finished_at is not None
    firm.xpm.break_after = (0, XpmUnavailable("down"))

    assert run(firm).status == "failed"

    assert firm.notifier.sent == []


def test_a_passing_outage_right_after_a_tenant_change_waits_like_any_other(firm: Firm) -> None:
    # Given a firm connected a month ago whose run completed; then the admin picks another tenant
    partner = with_partner(firm)
    firm.xpm.clients.append(client(partner=partner))
    firm.configs.update(FIRM, connected_at="2026-02-01T00:00:00Z")
    run(firm)
    firm.configs.update(FIRM, tenant_id="tenant-2", **tenant_change(firm.config, "tenant-2"))
    firm.xpm.break_after = (0, XpmUnavailable("down"))

    # When XPM is down for the next run (the probe of 2026-12-07: it emailed at once, counting the
    # 3 hours from the connection, the completed run having been forgotten with the old tenant)
    done = run(firm)

    # Then nobody is emailed yet, and the run after it still reads every client of the new tenant
    assert done.status == "failed"
    assert firm.notifier.sent == []
    firm.xpm.break_after = None
    run(firm)
    assert firm.xpm.client_lists_asked == [None, None, None]


def test_a_passing_outage_right_after_a_reconnect_waits_even_when_the_last_run_is_weeks_old(
    firm: Firm,
) -> None:
    # Given a firm whose last completed run is weeks old (it needed a reconnect), reconnected now
    partner = with_partner(firm)
    firm.xpm.clients.append(client(partner=partner))
    run(firm)
    weeks_ago = iso(START - timedelta(days=30))
    firm.configs.update(FIRM, last_completed_run_started_at=weeks_ago, connected_at=iso(START))
    firm.xpm.break_after = (0, XpmUnavailable("down"))

    # When XPM is down for the first run after it (the review of 2026-12-07: the weeks-old run
    # made the 3 hours long past, and the admin was emailed at once)
    done = run(firm)

    # Then the 3 hours count from the reconnect: nobody is emailed yet
    assert done.status == "failed"
    assert firm.notifier.sent == []


def test_a_wrong_tenant_answer_asks_the_admin_to_reconnect(firm: Firm) -> None:
    firm.xpm.break_after = (0, XpmWrongTenant("403"))
    firm.xpm.clients.append(client())

    done = run(firm)

    assert done.status == "failed"
    assert firm.config.status == "needs_reconnect"
    assert "XPM_WRONG_TENANT" in codes_of(firm)
    assert len(firm.notifier.sent) == 1


def test_a_lost_connection_whose_email_the_day_held_back_is_told_by_a_later_notice(firm: Firm) -> None:
    # The probe of 2026-12-07 (night): the firm runs no more, so nothing else would tell its admin
    firm.xpm.break_after = (0, XpmWrongTenant("403"))
    firm.xpm.clients.append(client())
    firm.notifier.suppressed = True
    done = run(firm)
    assert firm.config.reconnect_notice_run_id == done.run_id
    assert tell_lost_connection(FIRM, firm.services()) == "suppressed"
    assert firm.config.reconnect_notice_run_id == done.run_id, "asked again next hour"

    firm.notifier.suppressed = False
    assert tell_lost_connection(FIRM, firm.services()) == "sent"

    [told] = firm.notifier.sent
    assert told.run_id == done.run_id
    assert firm.config.reconnect_notice_run_id is None
    assert firm.config.last_notified_at is not None
    assert tell_lost_connection(FIRM, firm.services()) == "not_owed"
    assert len(firm.notifier.sent) == 1


def test_a_notice_owed_to_a_firm_that_reconnected_since_tells_nobody(firm: Firm) -> None:
    firm.xpm.break_after = (0, XpmWrongTenant("403"))
    firm.xpm.clients.append(client())
    firm.notifier.suppressed = True
    run(firm)
    firm.configs.update(FIRM, status="connected", grant_id="grant-2")
    firm.notifier.suppressed = False

    assert tell_lost_connection(FIRM, firm.services()) == "not_owed"

    assert firm.notifier.sent == []
    assert firm.config.reconnect_notice_run_id is None


def test_a_lost_connection_emailed_at_once_owes_nothing(firm: Firm) -> None:
    firm.xpm.break_after = (0, XpmWrongTenant("403"))
    firm.xpm.clients.append(client())

    run(firm)

    assert len(firm.notifier.sent) == 1
    assert firm.config.reconnect_notice_run_id is None


def test_an_owed_notice_whose_loss_is_no_longer_open_tells_nobody(firm: Firm) -> None:
    # The probe of 2026-12-07 (night): a reconnect left the owed notice set; days later the API
    # marked the firm needs_reconnect (no run), and the notice emailed about the old run, its
    # loss long closed, saying nothing of a lost connection
    firm.xpm.break_after = (0, XpmWrongTenant("403"))
    firm.xpm.clients.append(client())
    firm.notifier.suppressed = True
    lost = run(firm)
    firm.configs.update(FIRM, status="connected", grant_id="grant-2")  # a reconnect ...
    firm.xpm.break_after = None
    firm.notifier.suppressed = False
    run(firm)  # ... whose run closes the loss
    assert firm.configs.mark_needs_reconnect(FIRM, grant_id="grant-2")

    emailed = len(firm.notifier.sent)

    assert tell_lost_connection(FIRM, firm.services()) == "not_owed"

    assert len(firm.notifier.sent) == emailed
    assert lost.run_id not in [told.run_id for told in firm.notifier.sent]
    assert firm.config.reconnect_notice_run_id is None


def test_a_client_brought_back_from_the_archive_keeps_its_active_client_while_it_cannot_sync(
    firm: Firm,
) -> None:
    # The second read of 2026-12-07 (night): H archived, then live again in XPM under a new code but
    # failing; a new client R given H's old code took H's Active client (CLIENT_RELINKED), though
    # H is no archived client: SPEC A4's re-creation needs one
    partner = with_partner(firm)
    h = client("KOWA", partner=partner, name="Kowalski Super Fund")
    firm.xpm.clients.append(h)
    run(firm)
    archive(firm, h)
    run(firm)
    firm.xpm.put(
        h.model_copy(update={"is_archived": False, "client_code": "KOWA2", "account_manager_uuid": None}),
        at=firm.clock.now(),
    )
    r = client("KOWA", partner=partner, name="Brand New Client Pty Ltd")
    firm.xpm.put(r, at=firm.clock.now())

    run(firm)

    [hs] = firm.active.clients_with(xpm_uuid=h.uuid)
    assert hs["legal_name"] == "Kowalski Super Fund"
    assert firm.active.clients_with(xpm_uuid=r.uuid) == []
    found = {e.xpm_uuid: e.code for e in firm.runs.latest_entries()}
    assert found == {h.uuid: "PARTNER_MISSING", r.uuid: "CLIENT_CODE_TAKEN"}
    # And once H syncs, R syncs too, in one run
    firm.xpm.put(h.model_copy(update={"is_archived": False, "client_code": "KOWA2"}), at=firm.clock.now())
    assert run(firm).status == "success"
    assert firm.active.clients_with(xpm_uuid=r.uuid)[0]["code"] == "KOWA"


class _ReconnectingXpm(FakeXpm):
    """XPM refusing the run's grant because the admin connected again (another practice) while
    the run went on: the callback wrote a new grant's config before the run's next call."""

    firm: Firm | None = None

    def iter_clients(self, *, modified_since: datetime | None = None) -> Iterator[XpmClientRecord]:
        assert self.firm is not None
        self.firm.configs.update(FIRM, grant_id="grant-2", tenant_id="tenant-2", sync_enabled=False)
        raise XpmWrongTenant("403")


def test_a_grant_replaced_while_the_run_went_on_is_not_marked_for_reconnecting(firm: Firm) -> None:
    """The probe of 2026-12-07 (evening): the old grant's refusal marked the new connection
    needs_reconnect seconds after the admin made it, stopped the schedule and emailed them."""
    firm.configs.update(FIRM, grant_id="grant-1")
    firm.xpm = _ReconnectingXpm(staff=firm.xpm.staff)
    firm.xpm.firm = firm

    done = run(firm)

    assert done.status == "failed"
    assert firm.config.status == "connected"
    assert firm.notifier.sent == []
    [entry] = [e for e in firm.runs.latest_entries() if e.code == "XPM_WRONG_TENANT"]
    assert "connected to Xero again while this run went on" in entry.message


def test_a_run_queued_before_the_sync_was_paused_does_not_run(firm: Firm) -> None:
    """The probe of 2026-12-07 (evening): Start Sync, then a reconnect that brought several
    practices (pausing the sync): the queued run failed SYNC_NOT_CONFIGURED and emailed."""
    firm.configs.update(FIRM, sync_enabled=False, run_pending=True, tenant_id=None)

    assert sync(firm, trigger="manual") is None

    assert firm.runs.runs == {}
    assert firm.config.run_pending is False
    assert firm.notifier.asked == []


def configured(firm: Firm, **changes: Any) -> None:
    """The setup Start Sync needs is complete (the fake firm names no notification user)."""
    firm.configs.update(FIRM, notification_user_id="user-admin", **changes)


def admins_run_pending_and_xpm_failing(firm: Firm, error: Exception) -> None:
    """Start Sync pressed (its claim held) for a firm of one client, and XPM failing with ``error``."""
    configured(firm, run_pending=True)
    firm.xpm.clients.append(client(partner=with_partner(firm)))
    firm.xpm.break_after = (0, error)


def test_the_admins_run_of_a_firm_saved_with_later_runs(firm: Firm) -> None:
    """SPEC B1: one sync run per record. Later (``sync_enabled`` false) pauses the hourly sync
    (SPEC A6), not the run the admin asked for: the probe of 2026-12-08 found it dropped."""
    configured(firm, sync_enabled=False)

    result = sync(firm, trigger="manual")

    assert result is not None
    assert result.run.status == "success"


def test_an_hourly_run_of_a_paused_firm_does_not_run(firm: Firm) -> None:
    configured(firm, sync_enabled=False, run_pending=True)

    assert sync(firm, trigger="schedule") is None
    assert firm.runs.runs == {}


def test_the_admins_run_pressed_before_the_reconnect_that_paused_the_firm_does_not_run(firm: Firm) -> None:
    """A reconnect that chose another practice pauses the firm until the admin's Start Sync: a run
    the admin asked for before it would sync a practice nobody chose (SPEC A6)."""
    configured(
        firm,
        sync_enabled=False,
        run_pending=True,
        manual_requested_at="2026-03-01T08:00:00Z",
        connected_at="2026-03-01T08:30:00Z",
        tenant_id="tenant-2",
    )

    assert sync(firm, trigger="manual") is None

    assert firm.runs.runs == {}
    assert firm.config.run_pending is False


def test_a_config_that_never_recorded_sync_enabled_runs_what_it_is_sent(firm: Firm) -> None:
    """A config written by something other than this API (which always writes ``sync_enabled``)
    is not taken as paused: SPEC B1's one run per record."""
    firm.configs.configs[FIRM] = FirmConfig(
        firm_id=FIRM, status="connected", tenant_id="tenant-1", default_office_code=OFFICE
    )

    result = sync(firm, trigger="schedule")

    assert result is not None
    assert result.run.status == "success"


def test_an_hourly_run_ending_leaves_the_admins_run_queued_behind_it_pending(firm: Firm) -> None:
    """SPEC A6: Start Sync answers 429 while the admin's run is queued. The probe of 2026-12-08: the
    end of the hourly run ahead of it in the firm's queue reopened Start Sync, and a second manual
    run could be queued behind the first."""
    admins_run_pending_and_xpm_failing(firm, XpmUnavailable("down"))  # pressed while the hourly was queued

    failed = sync(firm, trigger="schedule", delivered_again_on_failure=True)
    assert failed is not None
    assert failed.transient
    assert firm.config.run_pending is True
    firm.xpm.break_after = None
    assert sync(firm, trigger="schedule") is not None
    assert firm.config.run_pending is True, "the admin's run has not run yet"

    assert sync(firm, trigger="manual") is not None
    assert firm.config.run_pending is False


def test_the_admins_run_failing_for_a_passing_reason_stays_pending_until_its_last_delivery(
    firm: Firm,
) -> None:
    admins_run_pending_and_xpm_failing(firm, XpmUnavailable("down"))

    first = sync(firm, trigger="manual", delivered_again_on_failure=True)

    assert first is not None
    assert first.transient
    assert firm.config.run_pending is True, "SQS delivers it again: it is still queued"
    last = sync(firm, trigger="manual", delivered_again_on_failure=False)
    assert last is not None
    assert last.transient
    assert firm.config.running_run_id is None
    assert firm.config.run_pending is False, "its last delivery: Start Sync may be pressed again"


def test_the_admins_run_failing_for_good_reopens_start_sync_even_on_a_delivery_sqs_would_repeat(
    firm: Firm,
) -> None:
    """A failure no retry mends (here the practice refuses the app) is no longer queued."""
    admins_run_pending_and_xpm_failing(firm, XpmBadResponse("XPM answered ERROR: An error has occurred"))

    result = sync(firm, trigger="manual", delivered_again_on_failure=True)

    assert result is not None
    assert not result.transient
    assert firm.config.run_pending is False


def test_the_admins_run_taken_up_by_a_run_continuing_leaves_the_gate_to_that_run(firm: Firm) -> None:
    firm.xpm.clients += [client(partner=with_partner(firm)) for _ in range(4)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    first = sync(firm)
    assert first is not None
    assert first.continued
    configured(firm, run_pending=True)  # Start Sync pressed while the next part was queued

    assert sync(firm, trigger="manual") is None

    assert firm.config.run_pending is False
    assert firm.config.running_run_id == first.run.run_id, "the run going on holds Start Sync's gate"


def test_a_tenant_change_during_a_run_keeps_the_runs_state_off_the_new_tenant(firm: Firm) -> None:
    partner = with_partner(firm)
    firm.xpm.clients.append(client(partner=partner))
    services = firm.services()
    original_list = firm.xpm.iter_clients

    def change_tenant_mid_list(**kwargs: Any) -> Any:
        firm.configs.update(FIRM, tenant_id="tenant-2", **tenant_change(firm.config, "tenant-2"))
        return original_list(**kwargs)

    firm.xpm.iter_clients = change_tenant_mid_list  # type: ignore[method-assign]
    from xpm_sync.sync.engine import run_sync

    run_sync(FIRM, "schedule", services)

    assert firm.config.last_full_read_started_at is None, "the new tenant's first run reads every client"
    assert firm.config.last_completed_run_started_at is None, "the run's end wrote no state"
    assert firm.config.last_run_id is not None


def test_a_tenant_change_during_a_part_that_stops_for_time_ends_the_run_there(firm: Firm) -> None:
    """The probe of 2026-12-07: the part's checkpoint was written over the tenant change's reset, so
    the continuation read the new practice with the old one's window and retried the old one's
    kept copies, creating its clients in Active after the switch."""
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(4)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    original_list = firm.xpm.iter_clients

    def change_tenant_mid_list(**kwargs: Any) -> Any:
        firm.configs.update(FIRM, tenant_id="tenant-2", **tenant_change(firm.config, "tenant-2"))
        return original_list(**kwargs)

    firm.xpm.iter_clients = change_tenant_mid_list  # type: ignore[method-assign]
    firm.configs.update(FIRM, run_pending=True)  # Start Sync pressed

    with powertools_json_log() as log:
        result = sync(firm, trigger="manual")

    assert result is not None
    assert not result.continued
    assert firm.queue.continuations == [], "no next part for the old practice"
    assert result.run.status == "failed"
    assert [e.code for e in firm.runs.latest_entries() if e.entity == "run"] == ["SYNC_SETUP_CHANGED"]
    logged = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [line["entry"]["code"] for line in logged if line["message"] == "sync run entry"] == [
        "SYNC_SETUP_CHANGED"
    ], "logged for the operators as it is stored"
    assert firm.config.checkpoint is None
    assert (firm.config.running_run_id, firm.config.run_pending) == (None, False)
    assert firm.config.last_full_read_started_at is None, "the new tenant's first run reads every client"


def test_a_run_ended_without_its_next_part_is_the_latest_run_for_the_run_level_problems(
    firm: Firm,
) -> None:
    """The probe of 2026-12-07: a run ended because its next part was dropped left the run-level
    problems as the run before had them (SPEC B6: they are the latest run's)."""
    firm.xpm.clients += [client(partner=with_partner(firm)) for _ in range(4)]
    firm.xpm.break_after = (0, XpmUnavailable("down"))
    run(firm)
    assert firm.states.states["run"].codes == {"XPM_UNAVAILABLE"}
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    first = sync(firm)
    assert first is not None
    assert first.continued

    # When another practice is chosen, and the next part is dropped
    firm.configs.update(FIRM, tenant_id="tenant-2", **tenant_change(firm.config, "tenant-2"))
    assert sync(firm, resume_run_id=first.run.run_id) is None

    # Then the outage closed (this run reached XPM), and why this run ended is open till the next
    assert firm.states.states["run"].codes == {"SYNC_SETUP_CHANGED"}
    assert [closed.code for closed in firm.states.fixed] == ["XPM_UNAVAILABLE"]


def test_a_continuation_of_an_ended_run_frees_what_still_names_it(firm: Firm) -> None:
    """The review of 2026-12-07: a run whose end was recorded but whose config update then failed
    kept running_run_id and its checkpoint; the redelivered part, finding the run ended, left them,
    and Start Sync answered 429 for hours."""
    firm.xpm.clients += [client(partner=with_partner(firm)) for _ in range(4)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    first = sync(firm)
    assert first is not None
    assert first.continued
    ended = first.run.model_copy(update={"status": "failed"})
    firm.runs.save_run(ended, firm.clock.now())  # its end recorded, the config's update lost

    assert sync(firm, resume_run_id=first.run.run_id) is None

    assert (firm.config.running_run_id, firm.config.checkpoint) == (None, None)
    assert firm.runs.runs[first.run.run_id].status == "failed"


def test_a_slow_drip_answer_checkpoints_and_two_parts_without_progress_fail_with_xpm_too_slow(
    firm: Firm,
) -> None:
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(5)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))

    first = sync(firm)
    assert first is not None
    assert first.continued
    checkpoint = firm.config.checkpoint
    assert isinstance(checkpoint, Checkpoint)
    assert checkpoint.processed == 2

    firm.xpm.break_after = (0, XpmTooSlow("drip"))
    second = sync(firm, resume_run_id=first.run.run_id)
    assert second is not None
    assert second.continued
    third = sync(firm, resume_run_id=first.run.run_id)

    assert third is not None
    assert third.run.status == "failed"
    assert "XPM_TOO_SLOW" in codes_of(firm)
    assert len(firm.queue.continuations) == 2, "no loop"


def test_ten_thousand_failing_clients_keep_no_growing_item_and_cost_nothing_next_hour(firm: Firm) -> None:
    # Given a large firm with no partners set and no default partner
    firm.xpm.staff.append(staff("Olive Owner", "owner@harbour.example"))
    # (the config item once held their UUIDs: 360 KB of them, near DynamoDB's item limit)
    firm.xpm.clients += [client(partner=None) for _ in range(10_000)]

    first = run(firm)
    writes_after_first = sum(firm.active.writes.values())
    second = run(firm)

    assert first.counts["client"]["failed"] == second.counts["client"]["failed"] == 10_000
    assert second.xpm_calls == 2
    assert sum(firm.active.writes.values()) == writes_after_first, "the next hourly run writes nothing"
    assert len(firm.config.model_dump_json()) < 10_000, "the config item stays small"

    # When the cause is fixed in Active, the next run syncs them all with no more XPM calls
    firm.active.add_office(OFFICE, default_partner_user_id=firm.active.add_user("dp@harbour.example"))
    third = run(firm)
    assert third.counts["client"]["created"] == 10_000
    assert third.xpm_calls == 2
    assert not [key for key in firm.states.states if key.startswith("client#")]


def test_a_run_that_stops_before_xpm_keeps_a_month_old_connection_alive(firm: Firm) -> None:
    """The probe of 2026-12-07: an enabled firm whose every run stopped before XPM (its default
    office deleted) never touched its tokens, and the schedule keeps alive only firms that do not
    sync hourly: after 60 days Xero would drop the connection (SPEC A6, A8)."""
    firm.active.offices_by_code.clear()  # the default office deleted in Active
    firm.configs.update(FIRM, tokens_refreshed_at=iso(firm.clock.now() - timedelta(days=29)))
    run(firm)
    assert firm.tokens.refreshes == 0, "not before 30 days"
    firm.clock.advance(days=1)

    runs = [run(firm) for _ in range(3)]
    preview(firm)

    assert [r.status for r in runs] == ["failed"] * 3
    assert codes_of(firm) == ["DEFAULT_OFFICE_MISSING"]
    assert firm.tokens.refreshes == 1, "once: the refresh is recorded, and a preview refreshes nothing"

    # A refresh Xero refuses is the run's failure: the firm must reconnect
    firm.clock.advance(days=31)
    firm.tokens.refused = True
    assert run(firm).status == "failed"
    assert codes_of(firm) == ["XPM_NEEDS_RECONNECT"]
    assert firm.config.status == "needs_reconnect"


def test_a_run_records_whose_fault_its_failure_was_for_the_operators_count(firm: Firm) -> None:
    firm.active.offices_by_code.clear()  # the default office deleted in Active: the firm's to fix

    owners = []
    run(firm)
    owners.append(firm.config.last_failure_owner)

    firm.active.add_office(OFFICE)
    firm.xpm.break_after = (0, XpmUnavailable("down"))
    firm.xpm.clients.append(client())
    run(firm)
    owners.append(firm.config.last_failure_owner)

    firm.xpm.break_after = None
    run(firm)
    owners.append(firm.config.last_failure_owner)

    assert owners == ["firm", "system", None]


def test_a_run_in_parts_judges_its_own_problems_on_the_whole_run(firm: Firm) -> None:
    # Given a firm whose connection owner left XPM, and a list that stops for time after 2 records
    partner = with_partner(firm)
    firm.configs.update(FIRM, connected_by_email="gone@harbour.example")
    firm.xpm.clients += [client(partner=partner) for _ in range(4)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    first = sync(firm)
    assert first is not None
    assert first.continued

    # When the next part finishes the run
    firm.xpm.break_after = None
    last = sync(firm, resume_run_id=first.run.run_id)

    # Then the first part's run-level warning stays open: the whole run reported it, once
    assert last is not None
    assert last.run.status == "success"
    assert firm.states.states["run"].codes == {"CONNECTION_OWNER_NOT_IN_XPM"}
    assert [e.code for e in firm.runs.latest_entries()] == ["CONNECTION_OWNER_NOT_IN_XPM"]


def test_a_suggestion_settled_in_a_part_that_stops_for_time_is_forgotten(firm: Firm) -> None:
    """The probe of 2026-12-07 (evening): only the run's last part forgot the suggestions it
    settled; one settled in an earlier part stayed offered until the next full read."""
    partner = with_partner(firm)
    firm.active.add_client(legal_name="Harbour Bakery Pty Ltd", code="HAND1")
    look_alike = client("X1", partner=partner, name="Harbour Bakery Pty Ltd")
    other = client("X2", partner=partner)
    firm.xpm.clients += [look_alike, other]
    run(firm)
    assert look_alike.uuid in firm.matches.suggestions
    archive(firm, look_alike)
    firm.xpm.put(other.model_copy(update={"phone": "1"}), at=firm.clock.now())
    firm.xpm.break_after = (1, XpmTooSlow("drip"))

    first = sync(firm)

    assert first is not None
    assert first.continued
    assert look_alike.uuid not in firm.matches.suggestions


def test_a_client_entered_by_hand_with_a_synced_clients_code_takes_it_when_that_one_moves(
    firm: Firm,
) -> None:
    """The probe of 2026-12-07 (evening): the run's index kept one client per code, so when the
    synced holder moved away the hand-made one was forgotten, and XPM's new client with that code
    was created beside it (A2: a client made by hand is linked, never duplicated)."""
    partner = with_partner(firm)
    old = client("K1", partner=partner)
    firm.xpm.clients.append(old)
    run(firm)
    hand_made = firm.active.add_client(legal_name="Hand Typed", code="K1", notes="typed")
    renumber(firm, old, "K2")
    newcomer = client("K1", partner=partner)
    firm.xpm.put(newcomer, at=firm.clock.now())

    done = run(firm)

    assert done.counts["client"]["created"] == 0
    assert firm.active.client_items[hand_made]["xpm_uuid"] == newcomer.uuid
    assert firm.active.client_items[hand_made]["notes"] == "typed"
    firm.active.assert_no_two_clients_share_a_code_or_uuid()


@pytest.mark.parametrize("hand_made_read_first", [False, True])
def test_a_synced_client_holds_its_code_ahead_of_one_entered_by_hand_with_it(
    firm: Firm, hand_made_read_first: bool
) -> None:
    """A review of 2026-12-07 (evening): when Active answered the hand-made client first, a new XPM
    client with the synced one's code was linked to it: two XPM clients synced on one code."""
    partner = with_partner(firm)
    synced = client("K1", partner=partner)
    firm.xpm.clients.append(synced)
    run(firm)
    firm.active.add_client(code="K1", legal_name="Hand Made Ltd")
    if hand_made_read_first:
        firm.active.client_items = dict(reversed(list(firm.active.client_items.items())))
    second = client("K1", partner=partner, name="Second Co Pty Ltd")
    firm.xpm.put(second, at=firm.clock.now())

    done = run(firm)

    assert done.status == "partial"
    assert codes_of(firm) == ["CLIENT_CODE_DUPLICATE"]
    assert firm.active.clients_with(xpm_uuid=second.uuid) == []


def test_each_part_of_a_run_keeps_its_own_entries_and_the_failure_that_ended_it(firm: Firm) -> None:
    """The probe of 2026-12-07: a continuation skipped as many of its own entries as earlier parts
    had written, so its record errors, and the run-level entry saying why the run failed, were lost."""
    # Given clients missing their partner (and no default partner), one before the list's first
    # stop for time and two before its second, then XPM down in the third part
    partner = with_partner(firm)
    missing = [client(partner=None) for _ in range(3)]
    firm.xpm.clients += [missing[0], client(partner=partner), client(partner=partner), missing[1], missing[2]]
    firm.xpm.clients += [client(partner=partner), client(partner=partner)]
    resume_run_id = None
    parts: list[RunResult] = []
    for stop in ((3, XpmTooSlow("drip")), (5, XpmTooSlow("drip")), (6, XpmUnavailable("down"))):
        firm.xpm.break_after = stop
        result = sync(firm, resume_run_id=resume_run_id)
        assert result is not None
        parts.append(result)
        resume_run_id = result.run.run_id
    part = parts[-1]

    # Then the run's log holds every failing client once, and the failure that ended the run
    assert part.run.status == "failed"
    entries = firm.runs.latest_entries()
    assert [(e.code, e.xpm_uuid) for e in entries if e.entity == "client"] == [
        ("PARTNER_MISSING", record.uuid) for record in missing
    ]
    assert [e.code for e in entries if e.entity == "run"] == ["XPM_UNAVAILABLE"]
    assert part.run.entry_count == len(entries) == 4


def test_operators_read_each_entry_of_the_run_as_a_json_line(firm: Firm) -> None:
    """SPEC A5: admins read the error log in Sync Monitoring, operators the same in CloudWatch Logs.
    The probe of 2026-12-07 found only the number of entries logged."""
    # Given a client with no partner and no default partner, and a connection owner gone from XPM
    firm.configs.update(FIRM, connected_by_email="gone@harbour.example")
    lost = client(partner=None, name="Harbour Bakery")
    firm.xpm.clients.append(lost)

    # When the run goes
    with powertools_json_log() as log:
        done = run(firm)

    # Then each of its entries is one JSON line, with what Sync Monitoring shows and whose run it is
    logged = [json.loads(line) for line in log.getvalue().splitlines()]
    entries = [line for line in logged if line.get("message") == "sync run entry"]
    stored = firm.runs.latest_entries()
    assert len(entries) == len(stored) == 2
    for line, entry in zip(entries, stored, strict=True):
        assert line["firm_id"] == FIRM
        assert line["run_id"] == done.run_id
        assert line["entry"] == entry.model_dump(exclude_none=True)
    assert {line["entry"]["code"] for line in entries} == {"PARTNER_MISSING", "CONNECTION_OWNER_NOT_IN_XPM"}


def test_a_record_a_run_meets_in_two_of_its_parts_counts_one_run_for_its_problem(firm: Firm) -> None:
    """The probe of 2026-12-07: a problem's ``runs`` (SPEC B6: how many runs reported it) counted one
    run twice when a later part met the record again (a reordered list, or a UUID either side of a
    part's end)."""
    partner = with_partner(firm)
    failing = client(partner=None)
    firm.xpm.clients += [failing, client(partner=partner), client(partner=partner), failing]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    first = sync(firm)
    assert first is not None
    assert first.continued
    firm.xpm.break_after = None

    sync(firm, resume_run_id=first.run.run_id)

    [problem] = firm.states.states[f"client#{failing.uuid}"].problems
    assert (problem.code, problem.runs) == ("PARTNER_MISSING", 1)


def test_a_retry_that_fails_before_active_matters_reads_nothing_from_active(firm: Firm) -> None:
    # Given clients failing on a missing partner (no default partner), kept for their retry
    firm.xpm.clients += [client(partner=None) for _ in range(50)]
    run(firm)
    firm.active.items_read = 0
    firm.active.lookups.clear()

    # When the next hourly run retries them, still without a partner
    again = run(firm)

    # Then it read the firm's users and office, and no client: their records fail whatever Active holds
    assert again.counts["client"]["failed"] == 50
    assert firm.active.items_read == len(firm.active.user_items) + len(firm.active.offices_by_code)
    assert firm.active.lookups == [], "no client looked up"


def test_a_changed_client_still_holding_its_code_is_looked_up_once(firm: Firm) -> None:
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(5)]
    run(firm)
    firm.xpm.put(firm.xpm.clients[2].model_copy(update={"phone": "03 9000 0000"}), at=firm.clock.now())
    firm.active.lookups.clear()

    run(firm)

    assert firm.active.lookups == ["uuid"], "found by its UUID, holding its code: no holder to look for"


def test_a_client_linked_since_the_full_read_is_never_suggested_for_a_look_alike(firm: Firm) -> None:
    """The probe of 2026-12-07: incremental runs suggested links among the clients the last full read
    found unlinked, including those linked since; the look-alike waited for an answer that could
    only be refused."""
    partner = with_partner(firm)
    trial_id = firm.active.add_client(legal_name="Harbour Trading")  # entered by hand, no code
    run(firm)  # the first sync: it is unlinked, and no XPM client looks like it yet
    first = client("HT01", partner=partner, name="Harbour Trading")
    firm.xpm.put(first, at=firm.clock.now())
    run(firm)  # the look-alike is suggested, and the admin links it
    assert firm.matches.suggestions[first.uuid].client_id == trial_id
    firm.matches.answer(first.uuid, "link")
    run(firm)
    assert firm.active.client_items[trial_id]["code"] == "HT01"

    # When another XPM client with the same name arrives in an incremental run
    again = client("HT02", partner=partner, name="Harbour Trading")
    firm.xpm.put(again, at=firm.clock.now())
    later = run(firm)

    # Then it is created: the linked client is no look-alike any more, nor listed as unlinked
    assert later.full_read is False
    assert later.counts["client"]["created"] == 1
    assert again.uuid not in firm.matches.suggestions
    assert trial_id not in {c.client_id for c in firm.matches.unlinked_clients}


def test_a_staff_member_re_created_in_xpm_with_the_same_email_takes_the_active_user_back(firm: Firm) -> None:
    """The probe of 2026-12-07: the new staff member failed with USER_LINKED_TO_OTHER_STAFF every
    run, the user left linked to a UUID XPM no longer lists."""
    leaver = staff("Sam Staff", "sam@harbour.example")
    firm.xpm.staff.append(leaver)
    run(firm)
    [user_id] = [uid for uid, item in firm.active.user_items.items() if item.get("xpm_uuid") == leaver.uuid]

    firm.xpm.staff.remove(leaver)
    returner = staff("Sam Staff", "SAM@harbour.example")
    firm.xpm.staff.append(returner)
    done = run(firm)

    assert done.status == "success"
    assert done.counts["user"]["updated"] == 1
    assert firm.active.user_items[user_id]["xpm_uuid"] == returner.uuid
    assert codes_of(firm)[-1:] == ["USER_RELINKED"]


def test_a_user_linked_to_a_staff_member_xpm_still_lists_is_not_taken_by_another(firm: Firm) -> None:
    first = staff("Sam Staff", "sam@harbour.example")
    firm.xpm.staff.append(first)
    run(firm)
    [user_id] = list(firm.active.user_items)
    # XPM sent the staff member without an email: the user keeps it, and still follows them.
    firm.xpm.staff = [first.model_copy(update={"email": None}), staff("Sam Other", "sam@harbour.example")]

    done = run(firm)

    assert done.status == "partial"
    assert codes_of(firm) == ["STAFF_EMAIL_MISSING", "USER_LINKED_TO_OTHER_STAFF"]
    assert list(firm.active.user_items) == [user_id]
    assert firm.active.user_items[user_id]["xpm_uuid"] == first.uuid


@pytest.mark.parametrize("newcomer_listed_first", [False, True])
def test_an_email_given_up_in_xpm_goes_to_the_staff_member_who_now_has_it(
    firm: Firm, newcomer_listed_first: bool
) -> None:
    """The probe of 2026-12-07 (evening): Mary changed her email and a newcomer got her old one. The
    newcomer failed with USER_LINKED_TO_OTHER_STAFF, and a client whose Partner is the newcomer was
    given Mary as its partner through the email she no longer has."""
    mary = staff("Mary Smith", "mary@harbour.example", uuid="staff-mary")
    firm.xpm.staff.append(mary)
    run(firm)
    [marys_user] = list(firm.active.user_items)

    moved = mary.model_copy(update={"email": "mary.smith@harbour.example"})
    newcomer = staff("Mary Jones", "mary@harbour.example", uuid="staff-jones")
    firm.xpm.staff = [newcomer, moved] if newcomer_listed_first else [moved, newcomer]
    firm.xpm.put(client("JONES", partner=newcomer), at=firm.clock.now())
    done = run(firm)

    assert done.status == "success", codes_of(firm)
    assert done.counts["user"] == {**done.counts["user"], "created": 1, "updated": 1, "failed": 0}
    assert firm.active.user_items[marys_user]["email"] == "mary.smith@harbour.example"
    assert firm.active.user_items[marys_user]["xpm_uuid"] == mary.uuid
    [jones_user] = [uid for uid, item in firm.active.user_items.items() if item["xpm_uuid"] == newcomer.uuid]
    assert firm.active.user_items[jones_user]["email"] == "mary@harbour.example"
    [jones_client] = firm.active.client_items.values()
    assert jones_client["partner_user_id"] == jones_user


def test_a_staff_members_new_email_held_by_another_active_user_is_refused_not_shared(firm: Firm) -> None:
    # The probe of 2026-12-07 (night): Ann's user took Bob's email, and two Active users signed in
    # with one (the other direction was already refused, USER_LINKED_TO_OTHER_STAFF)
    ann = staff("Ann Lee", "ann@harbour.example", uuid="staff-ann")
    firm.xpm.staff.append(ann)
    run(firm)
    [anns_user] = list(firm.active.user_items)
    bobs_user = firm.active.add_user("bob@harbour.example")  # added in Active, not in XPM

    firm.xpm.staff = [ann.model_copy(update={"email": "BOB@harbour.example"})]
    done = run(firm)

    assert done.status == "partial"
    assert done.counts["user"]["failed"] == 1
    [entry] = firm.runs.latest_entries()
    assert (entry.code, entry.xpm_uuid) == ("STAFF_EMAIL_TAKEN", ann.uuid)
    assert "bob@harbour.example" in entry.message
    assert firm.active.user_items[anns_user]["email"] == "ann@harbour.example"
    assert firm.active.user_items[bobs_user]["email"] == "bob@harbour.example"


def test_two_staff_members_swapping_emails_in_xpm_swap_them_in_active(firm: Firm) -> None:
    ann = staff("Ann Lee", "ann@harbour.example", uuid="staff-ann")
    bob = staff("Bob Lee", "bob@harbour.example", uuid="staff-bob")
    firm.xpm.staff += [ann, bob]
    run(firm)
    user_of = {item["xpm_uuid"]: uid for uid, item in firm.active.user_items.items()}

    firm.xpm.staff = [
        ann.model_copy(update={"email": "bob@harbour.example"}),
        bob.model_copy(update={"email": "ann@harbour.example"}),
    ]
    done = run(firm)

    assert done.status == "success", codes_of(firm)
    assert firm.active.user_items[user_of[ann.uuid]]["email"] == "bob@harbour.example"
    assert firm.active.user_items[user_of[bob.uuid]]["email"] == "ann@harbour.example"


@pytest.mark.parametrize("bobs_move", ["held in Active", "a duplicate in XPM"])
def test_an_email_whose_holder_cannot_move_off_it_is_taken_by_nobody(firm: Firm, bobs_move: str) -> None:
    # The review of 2026-12-07 (night): Ann took Bob's email while Bob's own move was refused, and
    # two Active users had bob@
    carol = staff("Carol Lee", "carol@harbour.example", uuid="staff-carol")
    ann = staff("Ann Lee", "ann@harbour.example", uuid="staff-ann")
    bob = staff("Bob Lee", "bob@harbour.example", uuid="staff-bob")
    firm.xpm.staff += [ann, bob] if bobs_move == "held in Active" else [carol, ann, bob]
    run(firm)
    if bobs_move == "held in Active":
        firm.active.add_user("carol@harbour.example")  # entered in Active, not in XPM

    # When Ann moves to Bob's email and Bob to Carol's, which he cannot have
    firm.xpm.staff = [
        *([carol] if bobs_move == "a duplicate in XPM" else []),
        ann.model_copy(update={"email": "bob@harbour.example"}),
        bob.model_copy(update={"email": "carol@harbour.example"}),
    ]
    run(firm)

    # Then neither moves: every Active user keeps an email of their own
    emails = [str(item["email"]).lower() for item in firm.active.user_items.values()]
    assert sorted(emails) == sorted(set(emails))
    assert "ann@harbour.example" in emails
    refused = {(e.code, e.xpm_uuid) for e in firm.runs.latest_entries()}
    assert ("STAFF_EMAIL_TAKEN", ann.uuid) in refused


def test_a_code_given_up_in_xpm_by_a_client_that_cannot_sync_is_taken_not_duplicated(firm: Firm) -> None:
    # The probe of 2026-12-07 (night): R moved off KOWA in XPM but failed (no partner), S took
    # KOWA, and S failed CLIENT_CODE_DUPLICATE ("used by both ... in XPM"): XPM had no duplicate.
    partner = with_partner(firm)
    r = client("KOWA", partner=partner, name="Kowalski Super Fund")
    s = client("BAKE", partner=partner, name="Grace Baker")
    firm.xpm.clients += [r, s]
    run(firm)
    firm.clock.advance(hours=1)
    firm.xpm.put(
        r.model_copy(update={"client_code": "YYYY", "account_manager_uuid": None}), at=firm.clock.now()
    )
    firm.xpm.put(s.model_copy(update={"client_code": "KOWA"}), at=firm.clock.now())

    done = run(firm)

    assert done.status == "partial"
    found = {e.xpm_uuid: e for e in firm.runs.latest_entries()}
    assert found[r.uuid].code == "PARTNER_MISSING"
    assert found[s.uuid].code == "CLIENT_CODE_TAKEN"
    assert "Kowalski Super Fund" in found[s.uuid].message
    # And once R's partner is set, both settle in one run
    firm.xpm.put(r.model_copy(update={"client_code": "YYYY"}), at=firm.clock.now())
    assert run(firm).status == "success"
    codes_now = sorted(c["code"] for c in firm.active.client_items.values())
    assert codes_now == ["KOWA", "YYYY"]


def test_a_second_active_user_with_a_partners_email_takes_neither_the_email_nor_the_clients(
    firm: Firm,
) -> None:
    # The probe of 2026-12-07 (night): with a duplicate sign-up listed before the linked user, every
    # run failed the partner with a false STAFF_EMAIL_TAKEN (and emailed the firm), and the daily
    # full read moved all the partner's clients to the duplicate
    partner = staff("Wei Brown", "wei.brown@harbour.example", uuid="staff-wei")
    firm.xpm.staff.append(partner)
    firm.xpm.clients += [client(partner=partner) for _ in range(3)]
    run(firm)
    [linked] = [uid for uid, item in firm.active.user_items.items() if item.get("xpm_uuid") == partner.uuid]
    duplicate = firm.active.add_user("WEI.BROWN@harbour.example")
    firm.active.user_items = {duplicate: firm.active.user_items.pop(duplicate), **firm.active.user_items}

    hourly = run(firm)
    firm.configs.update(FIRM, last_full_read_started_at=None)
    full = run(firm)

    assert (hourly.status, full.status) == ("success", "success"), codes_of(firm)
    assert {item["partner_user_id"] for item in firm.active.client_items.values()} == {linked}


def test_two_staff_with_one_email_keep_the_user_they_had_whatever_xpms_order(firm: Firm) -> None:
    # The probe of 2026-12-07 (night): XPM listing the twin first failed both, the linked one with
    # a false "only the first is synced"
    first = staff("Ann Lee", "ann@harbour.example", uuid="staff-ann")
    twin = staff("Ann Leigh", "ann@harbour.example", uuid="staff-twin")
    firm.xpm.staff += [first, twin]
    run(firm)
    firm.xpm.staff = [twin, first]

    done = run(firm)

    assert done.counts["user"]["failed"] == 1
    found = {(e.code, e.xpm_uuid) for e in firm.runs.latest_entries()}
    assert found == {("STAFF_EMAIL_DUPLICATE", twin.uuid)}
    assert [item["xpm_uuid"] for item in firm.active.user_items.values()].count(first.uuid) == 1


def test_a_shared_code_stays_with_the_first_client_when_both_wait_for_a_retry(firm: Firm) -> None:
    """The probe of 2026-12-07: retries ran in UUID order, so the client that lost the code could
    take it from the first (by XPM's order) while that one waited for its partner."""
    with_partner(firm)
    outsider = staff("Cher", "cher@harbour.example")  # one word: never an Active user
    firm.xpm.staff.append(outsider)
    first = client("SAME", partner=outsider, name="First Co", uuid="zz-first")
    second = client("SAME", partner=firm.xpm.staff[0], name="Second Co", uuid="aa-second")
    firm.xpm.clients += [first, second]
    run(firm)
    assert firm.active.client_items == {}, "the first waits for its partner, the second for the code"

    firm.active.add_user("cher@harbour.example")
    run(firm)  # both retried from their copies: neither changed in XPM

    [created] = firm.active.client_items.values()
    assert (created["xpm_uuid"], created["code"]) == (first.uuid, "SAME")
    assert codes_of(firm)[-1:] == ["CLIENT_CODE_DUPLICATE"]


def test_a_firm_that_never_completed_a_run_and_whose_connect_time_is_unknown_hears_after_3_hours(
    firm: Firm,
) -> None:
    """SPEC A5's "no completed run for 3 hours", for a config that does not say when the firm
    connected (one written as B3 lists it): counted from the first run of the failing streak."""
    with_partner(firm)
    firm.configs.configs[FIRM] = firm.configs.configs[FIRM].model_copy(update={"connected_at": None})
    firm.xpm.break_after = (0, XpmUnavailable("down"))
    firm.xpm.clients.append(client())

    assert run(firm).status == "failed"
    assert firm.notifier.sent == []
    firm.clock.advance(hours=3)
    assert run(firm).status == "failed"  # the second in a row, 4 hours after the first

    assert len(firm.notifier.sent) == 1


def test_a_client_waiting_on_its_suggested_link_costs_no_active_read_an_hour(firm: Firm) -> None:
    # Given an XPM client suggested as the look-alike of a client entered by hand (the first sync)
    partner = with_partner(firm)
    look_alike = client("HT01", partner=partner, name="Harbour Trading")
    firm.xpm.clients.append(look_alike)
    firm.active.add_client(legal_name="Harbour Trading")
    run(firm)
    assert look_alike.uuid in firm.matches.suggestions
    firm.active.items_read = 0

    # When the next hourly runs retry it while the admin has not answered
    later = run(firm)

    # Then it still waits, and the run read nothing from Active but the users and the office
    assert later.counts["client"]["skipped"] == 1
    assert firm.active.items_read == len(firm.active.user_items) + len(firm.active.offices_by_code)


# --- data an earlier version wrote (the upgrade probe of 2026-12-07) -----------------------------


def test_clients_an_earlier_version_kept_for_a_retry_are_found_by_one_full_read(firm: Firm) -> None:
    """The versions before the per-record retries (issue 19) kept the clients awaiting a retry in
    the config (``retry_client_uuids``): read by nothing since, they waited for the next daily full
    read, reported nowhere."""
    # Given a firm synced an hour ago, and a client XPM has not changed for a month that an earlier
    # version failed and kept for a retry
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner)]
    run(firm)
    waiting = client(partner=partner)
    firm.xpm.clients.append(waiting)
    firm.configs.update(FIRM, retry_client_uuids={waiting.uuid})
    firm.clock.advance(hours=1)

    # When the next hourly run goes
    done = run(firm)

    # Then it reads every client, syncs that one, and forgets the old list: the next hour is
    # incremental again
    assert done.full_read
    assert waiting.uuid in {stored.xpm_uuid for stored in firm.active.clients()}
    assert firm.config.retry_client_uuids is None
    firm.clock.advance(hours=1)
    assert not run(firm).full_read


def test_a_continuation_of_an_earlier_versions_checkpoint_reports_the_default_partner_once(
    firm: Firm,
) -> None:
    """An earlier version's checkpoint carries no run-level entries: the first part reported the
    Default Partner that is not an Active user, and the next part must not report it again."""
    partner = with_partner(firm)
    firm.active.add_office(OFFICE, default_partner_user_id="user-gone")
    firm.xpm.clients += [client(partner=partner) for _ in range(4)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    first = sync(firm)
    assert first is not None
    assert first.continued
    assert firm.config.checkpoint is not None
    firm.configs.update(FIRM, checkpoint=firm.config.checkpoint.model_dump(exclude={"run_entries"}))
    firm.xpm.break_after = None

    sync(firm, resume_run_id=first.run.run_id)

    assert [e.code for e in firm.runs.latest_entries()].count("DEFAULT_PARTNER_NOT_IN_ACTIVE") == 1


def test_a_continuation_of_an_earlier_versions_checkpoint_leaves_the_runs_problems_as_they_were(
    firm: Firm,
) -> None:
    """An earlier version's checkpoint carries no run-level entries: taking that as "the first part
    found none" closed the firm's open run-level problem (counted fixed), and the next run opened it
    again as new."""
    # Given a run-level problem open since the last run, and a full read split into parts, whose
    # checkpoint is written as an earlier version wrote it
    partner = with_partner(firm)
    firm.configs.update(FIRM, connected_by_email="gone@harbour.example")
    firm.xpm.clients += [client(partner=partner) for _ in range(4)]
    run(firm)
    assert firm.states.open_codes()["run"] == {"CONNECTION_OWNER_NOT_IN_XPM"}
    firm.clock.advance(days=1)
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    first = sync(firm)
    assert first is not None
    assert first.continued
    assert firm.config.checkpoint is not None
    earlier = firm.config.checkpoint.model_dump(exclude={"run_entries"})
    firm.configs.update(FIRM, checkpoint=earlier)

    # When this version continues it
    firm.xpm.break_after = None
    last = sync(firm, resume_run_id=first.run.run_id)

    # Then the problem is still open, and nothing counts it as fixed
    assert last is not None
    assert last.run.status == "success"
    assert firm.states.open_codes()["run"] == {"CONNECTION_OWNER_NOT_IN_XPM"}
    assert not any(p.code == "CONNECTION_OWNER_NOT_IN_XPM" for p in firm.states.fixed)


@pytest.mark.parametrize(
    ("breaks", "level"),
    [(XpmUnavailable("down"), "ERROR"), (None, "INFO")],
    ids=["a system fault", "records failing"],
)
def test_the_runs_last_line_is_an_error_only_when_the_system_failed_it(
    firm: Firm, caplog: pytest.LogCaptureFixture, breaks: Exception | None, level: str
) -> None:
    # The operators' probe of 2026-12-07 (late): a run XPM failed logged nothing above INFO, so
    # filtering on ERROR showed nothing; a client failing for its partner is the admin's, not theirs.
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner), client(partner=partner, business_structure=None)]
    firm.xpm.break_after = (0, breaks) if breaks is not None else None

    run(firm)

    [finished] = [r for r in caplog.records if r.getMessage() == "sync run finished"]
    assert finished.levelname == level


# --- the second read of the night's last commits ---------------------------------------------------


def _brought_back_and_a_new_client_with_its_old_code(
    firm: Firm, *, new_first: bool
) -> tuple[XpmClientRecord, XpmClientRecord]:
    """H synced, archived, then live again in XPM under a new code and failing (no partner);
    R, new, given H's old code: listed before H (``new_first``) or after it."""
    partner = with_partner(firm)
    h = client("KOWA", partner=partner, name="Kowalski Super Fund")
    firm.xpm.clients.append(h)
    run(firm)
    archive(firm, h)
    run(firm)
    back = h.model_copy(update={"is_archived": False, "client_code": "KOWA2", "account_manager_uuid": None})
    r = client("KOWA", partner=partner, name="Brand New Client Pty Ltd")
    for record in [r, back] if new_first else [back, r]:
        firm.xpm.put(record, at=firm.clock.now())
    return h, r


@pytest.mark.parametrize("new_first", [False, True], ids=["H first", "R first"])
def test_a_client_brought_back_keeps_its_active_client_when_the_run_goes_on_in_parts(
    firm: Firm, new_first: bool
) -> None:
    # The second read of 2026-12-07 (night): each part has its own ledger, so across a part's end R
    # took H's Active client (CLIENT_RELINKED), whichever of the two XPM listed first
    h, r = _brought_back_and_a_new_client_with_its_old_code(firm, new_first=new_first)
    firm.xpm.break_after = (1, XpmTooSlow("drip"))  # the first part stops after one record
    first = sync(firm)
    assert first is not None
    assert first.continued
    firm.xpm.break_after = None

    sync(firm, resume_run_id=first.run.run_id)

    [hs] = firm.active.clients_with(xpm_uuid=h.uuid)
    assert hs["legal_name"] == "Kowalski Super Fund"
    assert firm.active.clients_with(xpm_uuid=r.uuid) == []
    # R fails for the code (across a part's end the entry may name it a duplicate: the ledger that
    # knew H's new code is the first part's), and syncs once H does
    refused = {e.xpm_uuid for e in firm.runs.latest_entries() if e.code.startswith("CLIENT_CODE_")}
    assert refused == {r.uuid}


def test_a_lost_connection_record_closes_a_run_a_killed_worker_left(firm: Firm) -> None:
    # The second read of 2026-12-07 (night): the record's end cleared running_run_id, and the run a
    # killed worker left (its message gone to the dead-letter queue) showed running for 90 days
    now = firm.clock.now()
    left = SyncRun(
        firm_id=FIRM,
        run_id=f"{now:%Y%m%dT%H%M%S%fZ}-left",
        trigger="schedule",
        status="running",
        started_at=iso(now),
    )
    firm.runs.save_run(left, now)
    firm.configs.update(FIRM, running_run_id=left.run_id, grant_id="g1")
    firm.clock.advance(hours=1)
    assert firm.configs.mark_needs_reconnect(FIRM, grant_id="g1")  # the API found the grant refused

    recorded = record_connection_found_lost(FIRM, firm.services(), grant_id="g1")

    assert recorded is not None
    assert recorded.run.status == "failed"
    assert firm.config.running_run_id is None
    assert firm.runs.runs[left.run_id].status == "failed"


def test_the_apis_lost_connection_record_owes_its_email_when_the_day_already_had_one(firm: Firm) -> None:
    firm.configs.update(FIRM, grant_id="g1")
    firm.notifier.suppressed = True
    assert firm.configs.mark_needs_reconnect(FIRM, grant_id="g1")

    recorded = record_connection_found_lost(FIRM, firm.services(), grant_id="g1")

    assert recorded is not None
    assert firm.config.reconnect_notice_run_id == recorded.run.run_id
    assert firm.states.open_codes()["run"] == {"XPM_NEEDS_RECONNECT"}
    firm.notifier.suppressed = False
    assert tell_lost_connection(FIRM, firm.services()) == "sent"
    # Another grant, or connected again, before the worker came to it: nothing to record
    assert record_connection_found_lost(FIRM, firm.services(), grant_id="g0") is None
    firm.configs.update(FIRM, status="connected", grant_id="g2")
    assert record_connection_found_lost(FIRM, firm.services(), grant_id="g1") is None


class _MarkedByTheApiMidRun(FakeXpm):
    """XPM refusing the run's grant after the API met the same refusal and marked the firm."""

    firm: Firm | None = None

    def iter_clients(self, *, modified_since: datetime | None = None) -> Iterator[XpmClientRecord]:
        assert self.firm is not None
        assert self.firm.configs.mark_needs_reconnect(FIRM, grant_id="g1")
        raise XpmAuthError("401")


def test_a_run_refused_after_the_api_marked_the_firm_says_nothing_of_a_disconnect(firm: Firm) -> None:
    # The second read of 2026-12-07 (night): its entry said "disconnected while this run went on"
    firm.configs.update(FIRM, grant_id="g1")
    marked = _MarkedByTheApiMidRun(staff=firm.xpm.staff)
    marked.firm = firm
    firm.xpm = marked

    done = run(firm)

    assert done.status == "failed"
    assert firm.config.status == "needs_reconnect"
    [entry] = [e for e in firm.runs.latest_entries() if e.code == "XPM_NEEDS_RECONNECT"]
    assert "disconnected" not in entry.message
    assert firm.notifier.sent == [], "the API's record tells the admin, once"


def _with_an_archived_holder(firm: Firm, code: str) -> tuple[XpmStaff, XpmClientRecord]:
    partner = with_partner(firm)
    old = client(code, partner=partner, name="Old Kowalski Pty Ltd")
    firm.xpm.clients.append(old)
    run(firm)
    archive(firm, old)
    run(firm)
    return partner, old


def test_a_part_stopping_in_its_retries_still_lets_a_re_created_client_take_its_client_back(
    firm: Firm,
) -> None:
    # The third read of 2026-12-07 (night): a part that stopped in the retries (the whole list read)
    # took every archived holder for one it had not read yet, and failed the re-created client
    # with a false CLIENT_CODE_TAKEN (and an email)
    _, old = _with_an_archived_holder(firm, "KOWA")
    ghost = staff("Gus", "gus@harbour.example")  # a one-word name: never an Active user
    firm.xpm.staff.append(ghost)
    recreated = client("KOWA", partner=ghost, name="New Kowalski Pty Ltd", uuid="client-aaa-new")
    for record in [recreated, *(client(partner=ghost, uuid=f"client-zzz-{n}") for n in range(3))]:
        firm.xpm.put(record, at=firm.clock.now())
    run(firm)  # they fail for their partner
    run(firm)  # an hour on, no longer in XPM's incremental answer
    firm.active.add_user("gus@harbour.example")  # fixed in Active alone: retried from their copies
    asked = iter([1e9, 1e9])  # time for the list and the first retry (it sorts first), then none

    first = run_sync(FIRM, "schedule", replace(firm.services(), remaining_seconds=lambda: next(asked, 0.0)))

    assert first is not None
    assert first.continued
    assert firm.config.checkpoint is not None
    assert firm.config.checkpoint.phase == "retries"
    [taken_back] = firm.active.clients_with(xpm_uuid=recreated.uuid)
    assert taken_back["legal_name"] == "New Kowalski Pty Ltd"
    assert firm.active.clients_with(xpm_uuid=old.uuid) == []


@pytest.mark.parametrize("duplicate_listed_first", [False, True])
def test_a_user_moving_off_an_email_leaves_it_to_the_other_user_who_has_it(
    firm: Firm, duplicate_listed_first: bool
) -> None:
    # The third read of 2026-12-07 (night): with the linked user moving off e, the sync forgot e
    # altogether and created a user with e beside the duplicate sign-up that still had it
    ann = staff("Ann Able", "e@harbour.example", uuid="staff-a")
    firm.xpm.staff.append(ann)
    run(firm)
    duplicate = firm.active.add_user("e@harbour.example")
    if duplicate_listed_first:
        firm.active.user_items = {duplicate: firm.active.user_items.pop(duplicate), **firm.active.user_items}
    firm.xpm.staff = [
        ann.model_copy(update={"email": "ann.new@harbour.example"}),
        staff("Cat Cole", "e@harbour.example", uuid="staff-c"),
    ]

    run(firm)

    with_e = [
        uid
        for uid, item in firm.active.user_items.items()
        if str(item.get("email")).lower() == "e@harbour.example"
    ]
    assert with_e == [duplicate]
    assert firm.active.user_items[duplicate].get("xpm_uuid") == "staff-c", "the new staff member links to it"


def test_a_default_partner_changed_between_the_parts_of_a_full_read_reaches_the_first_parts_clients(
    firm: Firm,
) -> None:
    # The third read of 2026-12-07 (night): the run recorded the last part's Default Partner, so the
    # first part's clients kept the old one until the next daily full read
    first_partner = firm.active.add_user("first@harbour.example")
    firm.active.add_office(OFFICE, default_partner_user_id=first_partner)
    firm.xpm.clients += [client(partner=None) for _ in range(4)]
    run(firm)
    second_partner = firm.active.add_user("second@harbour.example")
    firm.configs.update(FIRM, last_full_read_started_at=None)  # the daily full read ...
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    part = sync(firm)
    assert part is not None
    assert part.continued
    firm.active.add_office(OFFICE, default_partner_user_id=second_partner)  # ... changed between parts
    firm.xpm.break_after = None
    sync(firm, resume_run_id=part.run.run_id)

    assert run(firm).full_read

    assert {c["partner_user_id"] for c in firm.active.client_items.values()} == {second_partner}


@pytest.mark.parametrize("bob_listed_first", [True, False])
def test_an_email_one_linked_user_gives_up_is_not_taken_while_a_duplicate_sign_up_has_it(
    firm: Firm, bob_listed_first: bool
) -> None:
    # The fourth read of 2026-12-07 (night): Ann gave e up, Bob took it though a duplicate sign-up
    # still had it (two users with e), and with Bob listed first his client's Partner became the
    # duplicate: the fallback to the other user with e overwrote Bob's claim
    ann = staff("Ann Able", "e@harbour.example", uuid="staff-a")
    bob = staff("Bob Bell", "f@harbour.example", uuid="staff-b")
    firm.xpm.staff += [ann, bob]
    run(firm)
    user_of = {item["xpm_uuid"]: uid for uid, item in firm.active.user_items.items()}
    duplicate = firm.active.add_user("e@harbour.example")
    moved_ann = ann.model_copy(update={"email": "ann.new@harbour.example"})
    moved_bob = bob.model_copy(update={"email": "e@harbour.example"})
    firm.xpm.staff = [moved_bob, moved_ann] if bob_listed_first else [moved_ann, moved_bob]
    firm.xpm.put(client(partner=moved_bob), at=firm.clock.now())

    run(firm)

    assert {(e.code, e.xpm_uuid) for e in firm.runs.latest_entries()} == {("STAFF_EMAIL_TAKEN", bob.uuid)}
    with_e = [
        uid
        for uid, item in firm.active.user_items.items()
        if str(item["email"]).lower() == "e@harbour.example"
    ]
    assert with_e == [duplicate]
    [bobs_client] = firm.active.client_items.values()
    assert bobs_client["partner_user_id"] == user_of[bob.uuid], "Bob is still his own user to Active"


def test_a_client_whose_partner_xpm_did_not_list_syncs_from_its_copy_once_listed(firm: Firm) -> None:
    gail = staff("Gail Ghost", "gail@harbour.example", uuid="staff-g")
    firm.xpm.clients.append(client(partner=gail))  # Gail not in XPM's staff list yet
    run(firm)
    assert codes_of(firm) == ["PARTNER_NOT_IN_ACTIVE"]
    firm.xpm.staff.append(gail)  # listed now, with an email: her user is made, the client retried

    again = run(firm)

    assert not again.full_read
    assert len(firm.active.client_items) == 1
