"""The hourly sync through the real path: scheduled event -> dispatcher -> SQS -> worker handler,
against moto and the XPM simulator over HTTP (SPEC A1-A5, A7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.adapters.active_table import ActiveRepository
from xpm_sync.adapters.sync_log import RecordStates
from xpm_sync.composition import worker as worker_composition
from xpm_sync.domain.mapping import normalise_email
from xpm_sync.domain.problem_summary import summarise_problems

from local.seed import TRIAL_NOTE
from local.xpm_sim import SimClient
from tests.fixtures.sync import SyncWorld

OWNED_USER_ATTRIBUTES = ("role", "office_code", "modules")


def _clean_client(world: SyncWorld) -> SimClient:
    return world.clean_clients()[0]


def test_first_run_creates_every_staff_member_and_client(world: SyncWorld) -> None:
    world.run_hourly()

    run = world.last_run()
    assert run.status == "success", world.entries(run)
    assert run.trigger == "schedule"
    users = world.items("user")
    synced_emails = {normalise_email(u["email"]) for u in users if u.get("xpm_uuid")}
    assert synced_emails == {normalise_email(s.email or "") for s in world.practice.staff}
    clients = world.items("client")
    assert {c["xpm_uuid"] for c in clients} == {c.uuid for c in world.practice.clients}
    partners = len(world.firm.partner_user_ids)
    assert run.counts["user"]["created"] == len(world.practice.staff) - partners
    assert run.counts["user"]["updated"] == partners  # linked by email, xpm_uuid added
    assert run.counts["client"]["created"] == len(world.practice.clients) - 1
    assert run.counts["client"]["updated"] == 1  # the hand-made trial client, linked by code
    assert run.xpm_calls == 2  # staff list + one client list


def test_hand_made_client_is_linked_by_code_and_keeps_active_only_attributes(world: SyncWorld) -> None:
    world.run_hourly()

    holders = [c for c in world.items("client") if c["code"] == world.firm.hand_made_client_code]
    assert len(holders) == 1, "the trial client must be linked, never duplicated"
    linked = holders[0]
    assert linked["client_id"] == world.firm.hand_made_client_id
    assert linked["notes"] == TRIAL_NOTE
    assert linked["office_code"] == world.firm.office_code
    xpm_client = next(c for c in world.practice.clients if c.code == world.firm.hand_made_client_code)
    assert linked["xpm_uuid"] == xpm_client.uuid
    assert linked["legal_name"] == xpm_client.name


def test_partner_users_keep_role_office_and_modules(world: SyncWorld) -> None:
    before = {u["user_id"]: u for u in world.items("user")}

    world.run_hourly()

    for user in world.items("user"):
        if user["user_id"] in before:
            for attribute in OWNED_USER_ATTRIBUTES:
                assert user[attribute] == before[user["user_id"]][attribute]
        else:
            assert not set(OWNED_USER_ATTRIBUTES) & set(user), "new users get no role, office or modules"


def test_client_fields_are_mapped_end_to_end(world: SyncWorld) -> None:
    client = _clean_client(world)
    partner = world.practice.staff_member(client.account_manager_uuid or "")
    world.practice.update_client(
        client.uuid,
        Name="Harbour & Sons Pty Ltd",
        Title="Mr",
        Email="office@harbour.example",
        Phone="03 9000 0000",
        Fax="03 9000 0001",
        Address="Level 2\n\n  10 Collins St  \nBuilding C\nRear entrance",
        City="Melbourne",
        Region="VIC",
        PostCode="3000",
        PostalAddress="PO Box 12",
        PostalCity="Carlton",
        PostalRegion="VIC",
        PostalPostCode="3053",
        BusinessStructure="company",
        BusinessNumber="51 824 753 556",
        JobManager=None,
    )

    world.run_hourly()

    stored = world.client_by_uuid(client.uuid)
    assert stored["legal_name"] == "Harbour & Sons Pty Ltd"
    assert stored["individual_title"] == "Mr"
    assert stored["email"] == "office@harbour.example"
    assert stored["telephone"] == "03 9000 0000"
    assert stored["fax"] == "03 9000 0001"
    assert stored["code"] == client.code
    assert stored["residential_address"] == {
        "line1": "Level 2",
        "line2": "10 Collins St",
        "line3": "Building C, Rear entrance",
        "suburb": "Melbourne",
        "state": "VIC",
        "post_code": "3000",
    }
    assert stored["postal_address"] == {
        "line1": "PO Box 12",
        "suburb": "Carlton",
        "state": "VIC",
        "post_code": "3053",
    }
    assert stored["abn"] == "51824753556"
    assert stored["entity_type"] == "company"
    assert stored["partner_user_id"] == world.firm.partner_user_ids[partner.uuid]
    assert "manager_user_id" not in stored
    assert stored["office_code"] == world.firm.office_code
    assert stored["xpm_archived"] is False


def test_second_run_with_nothing_changed_writes_nothing(world: SyncWorld, dynamodb_write_counter) -> None:
    world.run_hourly()
    world.sim.reset_calls()
    dynamodb_write_counter.reset()

    world.run_hourly()

    run = world.last_run()
    assert dynamodb_write_counter.total == 0
    assert run.counts["client"]["created"] == run.counts["client"]["updated"] == 0
    assert run.counts["user"]["created"] == run.counts["user"]["updated"] == 0
    xpm_paths = [c.path for c in world.sim.calls if "/practicemanager/" in c.path]
    assert len(xpm_paths) == 2, xpm_paths
    assert run.xpm_calls == 2


def test_hourly_run_asks_only_for_clients_modified_since_the_last_run(world: SyncWorld) -> None:
    world.run_hourly()
    first = world.last_run()
    renamed = _clean_client(world)
    world.practice.update_client(renamed.uuid, Name="Renamed Holdings Pty Ltd")
    world.sim.reset_calls()

    world.run_hourly()

    listing = world.sim.calls_to("client.api/list")[-1]
    since = datetime.strptime(listing.query["modifiedsince"], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    started = datetime.fromisoformat(first.started_at.replace("Z", "+00:00"))
    assert started - timedelta(minutes=10) <= since <= started
    run = world.last_run()
    assert run.counts["client"]["updated"] == 1
    assert world.client_by_uuid(renamed.uuid)["legal_name"] == "Renamed Holdings Pty Ltd"


def test_one_run_a_day_reads_every_client(world: SyncWorld) -> None:
    world.run_hourly()
    yesterday = (datetime.now(UTC) - timedelta(hours=25)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world.active  # noqa: B018 - keep the table client warm
    from xpm_sync.adapters import aws as aws_clients
    from xpm_sync.adapters.config_table import ConfigRepository

    ConfigRepository(aws_clients.table(world.names.config_table)).update(
        world.firm_id, last_full_read_started_at=yesterday
    )
    world.sim.reset_calls()

    world.run_hourly()

    listing = world.sim.calls_to("client.api/list")[-1]
    assert "modifiedsince" not in listing.query
    assert world.last_run().full_read is True


def test_partner_missing_from_active_fails_the_record_until_the_partner_is_added(world: SyncWorld) -> None:
    client = _clean_client(world)
    outsider = world.practice.staff[-1]
    assert outsider.uuid not in world.firm.partner_user_ids
    # A one-word name keeps the sync from creating this staff member as an Active user.
    world.practice.update_staff(outsider.uuid, Name="Cher")
    world.practice.update_client(client.uuid, AccountManager=outsider.uuid)
    # Last changed in XPM long before this run: later incremental reads will not list it again.
    world.practice.client(client.uuid).modified_at = datetime.now(UTC) - timedelta(days=3)

    world.run_hourly()

    run = world.last_run()
    assert run.status == "partial"
    problems = [e for e in world.entries(run) if e.xpm_uuid == client.uuid]
    assert [e.code for e in problems] == ["PARTNER_NOT_IN_ACTIVE"]
    assert (
        problems[0].suggestion == "Add this partner to Active as a user with the same email as in XPM"
    )  # SPEC A5, word for word
    assert world.awaiting_retry() == {client.uuid}

    # Fixing the cause in Active alone, without touching the client in XPM, is enough.
    partner_id = world.add_active_user(f"  {(outsider.email or '').upper()}")
    world.sim.reset_calls()

    world.run_hourly()

    assert world.last_run().xpm_calls == 2, "retried from the copy the sync kept, with no call of its own"
    assert world.client_by_uuid(client.uuid)["partner_user_id"] == partner_id
    assert world.awaiting_retry() == set()
    assert client.uuid not in str(world.open_problems())


def test_partner_and_manager_uuids_in_another_case_than_the_staff_list_resolve(world: SyncWorld) -> None:
    client = _clean_client(world)
    partner_uuid = client.account_manager_uuid
    assert partner_uuid is not None
    shouted = partner_uuid.upper()
    world.practice.update_client(client.uuid, AccountManager=shouted, JobManager=shouted)

    world.run_hourly()

    synced = world.client_by_uuid(client.uuid)
    assert synced["partner_user_id"] == world.firm.partner_user_ids[partner_uuid]
    assert synced["manager_user_id"] == world.firm.partner_user_ids[partner_uuid]
    assert [e for e in world.entries(world.last_run()) if e.xpm_uuid == client.uuid] == []


def test_client_without_partner_uses_the_default_partner(world: SyncWorld) -> None:
    client = _clean_client(world)
    world.practice.update_client(client.uuid, AccountManager=None)
    default_partner = world.set_default_partner()

    world.run_hourly()

    assert world.client_by_uuid(client.uuid)["partner_user_id"] == default_partner


def test_client_without_partner_and_no_default_is_an_error_with_a_suggestion(world: SyncWorld) -> None:
    client = _clean_client(world)
    world.practice.update_client(client.uuid, AccountManager=None)

    world.run_hourly()

    [entry] = [e for e in world.entries() if e.xpm_uuid == client.uuid]
    assert entry.code == "PARTNER_MISSING"
    assert (
        entry.suggestion == "Assign a partner in XPM, or set a Default Partner in Admin Centre -> Office"
    )  # SPEC A5
    assert not [c for c in world.items("client") if c.get("xpm_uuid") == client.uuid]


def test_archived_client_is_not_created_and_a_linked_one_is_marked_not_deleted(world: SyncWorld) -> None:
    linked, fresh = world.practice.clients[1], world.practice.clients[2]
    world.practice.archive_client(fresh.uuid)
    world.run_hourly()
    assert not [c for c in world.items("client") if c.get("xpm_uuid") == fresh.uuid]

    world.practice.archive_client(linked.uuid)
    world.run_hourly()

    stored = world.client_by_uuid(linked.uuid)
    assert stored["xpm_archived"] is True
    assert stored["legal_name"] == linked.name


def test_code_change_in_xpm_changes_the_linked_client_code(world: SyncWorld) -> None:
    client = _clean_client(world)
    world.run_hourly()
    client_id = world.client_by_uuid(client.uuid)["client_id"]

    world.practice.update_client(client.uuid, ClientCode="NEWCODE1")
    world.run_hourly()

    stored = world.client_by_uuid(client.uuid)
    assert stored["client_id"] == client_id
    assert stored["code"] == "NEWCODE1"


def test_duplicate_codes_sync_the_first_and_name_both_in_the_error(world: SyncWorld) -> None:
    first, second = world.practice.clients[3], world.practice.clients[4]
    world.practice.update_client(second.uuid, ClientCode=first.code)

    world.run_hourly()

    assert world.client_by_uuid(first.uuid)
    assert not [c for c in world.items("client") if c.get("xpm_uuid") == second.uuid]
    [entry] = [e for e in world.entries() if e.code == "CLIENT_CODE_DUPLICATE"]
    assert entry.xpm_uuid == second.uuid
    assert (first.name or "") in entry.message
    assert (second.name or "") in entry.message


def test_a_code_freed_by_a_rename_is_taken_by_another_client_in_the_same_run(world: SyncWorld) -> None:
    renamed, taker = world.clean_clients()[:2]
    world.run_hourly()
    freed = renamed.code
    world.practice.update_client(renamed.uuid, ClientCode="RENAMED1")
    world.practice.update_client(taker.uuid, ClientCode=freed)

    world.run_hourly()

    assert world.client_by_uuid(renamed.uuid)["code"] == "RENAMED1"
    assert world.client_by_uuid(taker.uuid)["code"] == freed
    assert [e.code for e in world.entries(world.last_run())] == []


def test_a_client_takes_a_code_that_a_later_client_in_the_list_gives_up(world: SyncWorld) -> None:
    # A firm renumbering its codes: the taker comes first in XPM's list, while Active still gives
    # its new code to the client further down that moves to another.
    taker, renamed = world.clean_clients()[:2]
    world.run_hourly()
    freed = renamed.code
    world.practice.update_client(taker.uuid, ClientCode=freed)
    world.practice.update_client(renamed.uuid, ClientCode="RENAMED1")

    world.run_hourly()

    assert world.client_by_uuid(taker.uuid)["code"] == freed
    assert world.client_by_uuid(renamed.uuid)["code"] == "RENAMED1"
    run = world.last_run()
    assert run.status == "success"
    assert run.counts["client"]["updated"] == 2
    assert [e.code for e in world.entries(run)] == []


def test_a_chain_of_renumbered_codes_settles_in_one_run(world: SyncWorld) -> None:
    first, second, third = world.clean_clients()[:3]
    world.run_hourly()
    codes = [first.code, second.code, third.code]
    # Each takes the code of the one after it in XPM's list; the last takes a new one.
    world.practice.update_client(first.uuid, ClientCode=codes[1])
    world.practice.update_client(second.uuid, ClientCode=codes[2])
    world.practice.update_client(third.uuid, ClientCode="CHAIN003")

    world.run_hourly()

    assert [world.client_by_uuid(c.uuid)["code"] for c in (first, second, third)] == [
        codes[1],
        codes[2],
        "CHAIN003",
    ]
    assert [e.code for e in world.entries(world.last_run())] == []


def test_a_waiting_client_keeps_its_code_from_a_later_client_of_the_list(world: SyncWorld) -> None:
    # XPM's order: taker, then a client given the same code, then the client giving it up.
    taker, later, holder = world.clean_clients()[:3]
    world.run_hourly()
    code, later_code = holder.code, later.code
    world.practice.update_client(taker.uuid, ClientCode=code)
    world.practice.update_client(later.uuid, ClientCode=code)
    world.practice.update_client(holder.uuid, ClientCode="MOVED001")

    world.run_hourly()

    assert world.client_by_uuid(taker.uuid)["code"] == code, "the first in XPM's order wins (SPEC A4)"
    assert world.client_by_uuid(later.uuid)["code"] == later_code
    assert world.client_by_uuid(holder.uuid)["code"] == "MOVED001"
    [entry] = world.entries(world.last_run())
    assert (entry.code, entry.xpm_uuid) == ("CLIENT_CODE_DUPLICATE", later.uuid)
    assert f"only {taker.name} ({code}) is synced" in entry.message


def test_two_clients_that_swap_codes_in_xpm_swap_them_in_active(world: SyncWorld) -> None:
    one, other = world.clean_clients()[:2]
    world.run_hourly()
    ids = {c.uuid: world.client_by_uuid(c.uuid)["client_id"] for c in (one, other)}
    one_code, other_code = one.code, other.code
    world.practice.update_client(one.uuid, ClientCode=other_code, Fax="03 5555 0001")
    world.practice.update_client(other.uuid, ClientCode=one_code)

    world.run_hourly()

    assert world.client_by_uuid(one.uuid)["code"] == other_code
    assert world.client_by_uuid(one.uuid)["fax"] == "03 5555 0001"
    assert world.client_by_uuid(other.uuid)["code"] == one_code
    assert {c.uuid: world.client_by_uuid(c.uuid)["client_id"] for c in (one, other)} == ids
    codes = [c.get("code") for c in world.items("client")]
    assert len(codes) == len(set(codes)), "no two Active clients share a code"
    run = world.last_run()
    assert run.status == "success"
    assert run.counts["client"]["updated"] == 2
    assert [e.code for e in world.entries(run)] == []


def test_a_ring_of_three_codes_moves_at_once(world: SyncWorld) -> None:
    ring = world.clean_clients()[:3]
    world.run_hourly()
    codes = [c.code for c in ring]
    for client, code in zip(ring, codes[1:] + codes[:1], strict=True):
        world.practice.update_client(client.uuid, ClientCode=code)

    world.run_hourly()

    assert [world.client_by_uuid(c.uuid)["code"] for c in ring] == codes[1:] + codes[:1]
    assert [e.code for e in world.entries(world.last_run())] == []


def test_a_swap_active_refuses_keeps_both_codes_until_the_next_run(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, other = world.clean_clients()[:2]
    world.run_hourly()
    one_code, other_code = one.code, other.code
    world.practice.update_client(one.uuid, ClientCode=other_code)
    world.practice.update_client(other.uuid, ClientCode=one_code)
    with monkeypatch.context() as refused:
        # As when Active deletes one of them, or writes one, while the transaction is made.
        refused.setattr(ActiveRepository, "set_codes", lambda *_args, **_kwargs: False)
        world.run_hourly()

    assert [world.client_by_uuid(c.uuid)["code"] for c in (one, other)] == [one_code, other_code]
    entries = world.entries(world.last_run())
    assert {e.xpm_uuid for e in entries} == {one.uuid, other.uuid}
    assert {e.code for e in entries} == {"CLIENT_CODE_TAKEN"}
    assert all("swap" in e.message and "next run" in e.message for e in entries)

    world.run_hourly()  # both are retried

    assert [world.client_by_uuid(c.uuid)["code"] for c in (one, other)] == [other_code, one_code]
    assert world.last_run().status == "success"


def test_a_swap_with_a_client_that_cannot_sync_keeps_both_codes_and_reports_it(world: SyncWorld) -> None:
    one, other = world.clean_clients()[:2]
    world.run_hourly()
    one_code, other_code = one.code, other.code
    world.practice.update_client(one.uuid, ClientCode=other_code)
    world.practice.update_client(other.uuid, ClientCode=one_code, BusinessStructure=None)

    world.run_hourly()

    assert world.client_by_uuid(one.uuid)["code"] == one_code
    assert world.client_by_uuid(other.uuid)["code"] == other_code
    found = {(e.xpm_uuid, e.code) for e in world.entries(world.last_run())}
    assert (other.uuid, "BUSINESS_STRUCTURE_MISSING") in found
    # XPM has no duplicate (the two swapped): the code is still held in Active by the client that
    # could not sync (the probe of 2026-12-07 (night): this was CLIENT_CODE_DUPLICATE, "used by
    # both ... in XPM", sending the admin to look for a duplicate XPM does not have)
    assert (one.uuid, "CLIENT_CODE_TAKEN") in found


def test_a_client_moving_onto_a_code_another_still_holds_leaves_the_holder_synced(world: SyncWorld) -> None:
    mover, holder = world.clean_clients()[:2]
    world.run_hourly()
    mover_code, held = mover.code, holder.code
    world.practice.update_client(mover.uuid, ClientCode=held)  # earlier in XPM's list than the holder
    world.practice.update_client(holder.uuid, Fax="03 9999 0000")

    world.run_hourly()

    assert world.client_by_uuid(holder.uuid)["fax"] == "03 9999 0000", "the holder keeps syncing"
    assert world.client_by_uuid(mover.uuid)["code"] == mover_code
    [entry] = [e for e in world.entries(world.last_run()) if e.code == "CLIENT_CODE_DUPLICATE"]
    assert entry.xpm_uuid == mover.uuid
    assert (holder.name or "") in entry.message
    assert (mover.name or "") in entry.message


def test_optional_field_emptied_in_xpm_is_emptied_in_active(world: SyncWorld) -> None:
    client = _clean_client(world)
    world.practice.update_client(client.uuid, Fax="03 1111 2222")
    world.run_hourly()
    assert world.client_by_uuid(client.uuid)["fax"] == "03 1111 2222"

    world.practice.update_client(client.uuid, Fax=None)
    world.run_hourly()

    assert "fax" not in world.client_by_uuid(client.uuid)


def test_revoked_connection_fails_the_run_and_asks_to_reconnect(world: SyncWorld) -> None:
    world.sim.revoke_all()

    deliveries = world.run_hourly()

    run = world.last_run()
    assert run.status == "failed"
    [entry] = world.entries(run)
    assert entry.code == "XPM_NEEDS_RECONNECT"
    assert entry.entity == "run"
    assert world.config().status == "needs_reconnect"
    assert not any(d.failed for d in deliveries), "reconnecting is not something a retry fixes"


def test_xpm_unavailable_is_recorded_and_the_message_retried_by_sqs(world: SyncWorld) -> None:
    world.sim.faults.add("unavailable", times=None, path="staff.api")

    deliveries = world.run_hourly()

    assert deliveries[0].failed == [{"firm_id": world.firm_id, "trigger": "schedule"}]
    run = world.last_run()
    assert run.status == "failed"
    assert [e.code for e in world.entries(run)] == ["XPM_UNAVAILABLE"]


def test_dispatcher_queues_only_enabled_connected_firms(world: SyncWorld) -> None:
    from xpm_sync.adapters import aws as aws_clients

    config = aws_clients.table(world.names.config_table)
    config.put_item(Item={"firm_id": "firm-off", "status": "connected", "sync_enabled": False})
    config.put_item(Item={"firm_id": "firm-broken", "status": "needs_reconnect", "sync_enabled": True})

    deliveries = world.run_hourly()

    # Runs only; a connected firm whose sync is off may get a keep-alive instead (SPEC A6,
    # tests/e2e/test_keep_alive.py), which runs nothing.
    runs = [body["firm_id"] for d in deliveries for body in d.bodies if not body.get("keep_alive")]
    assert runs == [world.firm_id]


class _OneSecond:
    """The worker's clocks (one per invocation) for runs that all fall within one second, each
    moment later than the last."""

    at = datetime.now(UTC).replace(microsecond=0)
    ticks = 0

    @classmethod
    def start_now(cls) -> None:
        cls.at, cls.ticks = datetime.now(UTC).replace(microsecond=0), 0

    def now(self) -> datetime:
        _OneSecond.ticks += 1
        return self.at + timedelta(microseconds=_OneSecond.ticks)


def test_what_a_run_fixes_and_finds_in_the_same_second_as_the_last_email_counts_as_fixed_and_new(
    world: SyncWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe of 2026-12-07: times kept to the second put a run that fixed a problem in the very
    second of the last email among what that email had told, so fixed_since_last_email said 0."""
    _OneSecond.start_now()
    monkeypatch.setattr(worker_composition, "SystemClock", _OneSecond)
    fixed, broken = world.clean_clients()[:2]
    outsider = world.practice.staff[-1]
    assert outsider.uuid not in world.firm.partner_user_ids
    world.practice.update_staff(outsider.uuid, Name="Cher")  # so the sync never creates the user
    world.practice.update_client(fixed.uuid, AccountManager=outsider.uuid)
    world.run_hourly()
    assert world.last_run().status == "partial"
    assert world.open_problems()[f"client#{fixed.uuid}"] == {"PARTNER_NOT_IN_ACTIVE"}
    assert len(world.emails()) == 1
    emailed_at = world.config().last_notified_at

    world.add_active_user((outsider.email or "").upper())
    world.practice.update_client(broken.uuid, BusinessStructure="")
    world.run_hourly()

    states = RecordStates(aws_clients.table(world.names.sync_log_table), world.firm_id)
    summary = summarise_problems(
        states.every_open(), states.fixed_after(emailed_at), last_emailed_at=emailed_at
    )
    # The user added is also the Manager of other clients: their warnings close at this run too.
    fixed_by_code = {group.code: group.count for group in summary.fixed}
    fixed_managers = fixed_by_code.pop("MANAGER_NOT_IN_ACTIVE", 0)
    assert fixed_by_code == {"PARTNER_NOT_IN_ACTIVE": 1}
    assert summary.fixed_since_last_email == 1 + fixed_managers
    assert len(list(states.fixed_after(emailed_at))) == 1 + fixed_managers
    assert [(group.code, group.count) for group in summary.new] == [("BUSINESS_STRUCTURE_MISSING", 1)]
