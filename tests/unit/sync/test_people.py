"""XPM staff as the Partners and Managers of clients (SPEC A2-A4): a staff member linked to an
Active user resolves to it (users match by ``xpm_uuid`` first); one not linked resolves by email,
never to another listed staff member's user. Found by the probe of 2026-12-08."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import FIRM, Firm
from tests.unit.sync.builders import client, codes_of, preview, run, staff


@pytest.fixture
def firm() -> Firm:
    return Firm()


def _user_of(firm: Firm, xpm_uuid: str) -> str:
    [user_id] = [uid for uid, item in firm.active.user_items.items() if item.get("xpm_uuid") == xpm_uuid]
    return user_id


def _client(firm: Firm, xpm_uuid: str) -> dict[str, Any]:
    [item] = [item for item in firm.active.client_items.values() if item.get("xpm_uuid") == xpm_uuid]
    return item


@pytest.mark.parametrize("anns_change", ["email taken in Active", "email removed", "one-word name"])
def test_a_newcomer_refused_ann_s_user_is_not_given_ann_s_user_as_partner(
    firm: Firm, anns_change: str
) -> None:
    """Ann (linked to user U) cannot sync this run, a newcomer Bob has Ann's old email in XPM: Bob
    fails USER_LINKED_TO_OTHER_STAFF (U is Ann's by xpm_uuid). A client whose Partner is Bob was
    written with U, Ann's user, with no entry of its own; it fails PARTNER_NOT_IN_ACTIVE now."""
    ann = staff("Ann Lee", "ann@harbour.example", uuid="staff-ann")
    firm.xpm.staff.append(ann)
    run(firm)
    anns_user = _user_of(firm, ann.uuid)

    if anns_change == "email taken in Active":
        firm.active.add_user("ann.lee@harbour.example")  # entered in Active by hand
        moved = ann.model_copy(update={"email": "ann.lee@harbour.example"})
    elif anns_change == "email removed":
        moved = ann.model_copy(update={"email": None})
    else:
        moved = ann.model_copy(update={"email": "ann.lee@harbour.example", "name": "Ann"})
    bob = staff("Bob Stone", "ann@harbour.example", uuid="staff-bob")
    firm.xpm.staff = [moved, bob]
    bobs_client = client("BOB01", partner=bob)
    firm.xpm.put(bobs_client, at=firm.clock.now())
    run(firm)

    assert ("USER_LINKED_TO_OTHER_STAFF", bob.uuid) in {
        (e.code, e.xpm_uuid) for e in firm.runs.latest_entries()
    }
    written = [item for item in firm.active.client_items.values() if item.get("xpm_uuid") == bobs_client.uuid]
    assert not any(item.get("partner_user_id") == anns_user for item in written)
    assert [e.code for e in firm.runs.latest_entries() if e.xpm_uuid == bobs_client.uuid] == [
        "PARTNER_NOT_IN_ACTIVE"
    ]


def test_a_newcomer_managing_a_client_is_not_resolved_to_ann_s_user(firm: Firm) -> None:
    partner = staff("Pat Partner", "pat@harbour.example", uuid="staff-pat")
    ann = staff("Ann Lee", "ann@harbour.example", uuid="staff-ann")
    firm.xpm.staff += [partner, ann]
    run(firm)
    anns_user = _user_of(firm, ann.uuid)
    bob = staff("Bob Stone", "ann@harbour.example", uuid="staff-bob")
    firm.xpm.staff = [partner, ann.model_copy(update={"email": None}), bob]
    managed = client("MGR01", partner=partner, job_manager_uuid=bob.uuid)
    firm.xpm.put(managed, at=firm.clock.now())
    run(firm)

    item = _client(firm, managed.uuid)
    assert item.get("manager_user_id") != anns_user, "Bob's client is managed by Ann's user"
    assert [e.code for e in firm.runs.latest_entries() if e.xpm_uuid == managed.uuid] == [
        "MANAGER_NOT_IN_ACTIVE"
    ]


def test_a_linked_partner_refused_as_an_xpm_duplicate_keeps_her_clients_on_her_own_user(firm: Firm) -> None:
    """Ann (linked to U) moves in XPM to an email a newcomer Bob, listed first, also has: Ann fails
    STAFF_EMAIL_DUPLICATE and Bob gets a new user with it. Ann's clients resolved through the shared
    email to Bob's new user, and the daily full read moved every one of them to Bob, silently."""
    ann = staff("Ann Lee", "ann@harbour.example", uuid="staff-ann")
    firm.xpm.staff.append(ann)
    anns_clients = [client(partner=ann) for _ in range(3)]
    firm.xpm.clients += anns_clients
    run(firm)
    anns_user = _user_of(firm, ann.uuid)

    bob = staff("Bob Stone", "office@harbour.example", uuid="staff-bob")
    firm.xpm.staff = [bob, ann.model_copy(update={"email": "office@harbour.example"})]
    firm.configs.update(FIRM, last_full_read_started_at=None)  # the daily full read
    done = run(firm)

    assert done.full_read
    assert ("STAFF_EMAIL_DUPLICATE", ann.uuid) in {(e.code, e.xpm_uuid) for e in firm.runs.latest_entries()}
    partners = {_client(firm, c.uuid)["partner_user_id"] for c in anns_clients}
    assert partners == {anns_user}, (
        f"Ann's clients moved to Bob's user {_user_of(firm, bob.uuid)}: {partners}"
    )


def test_the_connection_owner_refused_staff_email_taken_is_still_in_xpms_staff_list(firm: Firm) -> None:
    """Ann connected XPM with her Xero login ann.lee@; she puts it on her XPM staff record, but
    Active already has a user ann.lee@ (signed up by hand): STAFF_EMAIL_TAKEN is right, and the run
    said too that the connection owner was not in XPM's staff list, which XPM's list contradicts."""
    ann = staff("Ann Lee", "ann@harbour.example", uuid="staff-ann")
    firm.xpm.staff.append(ann)
    run(firm)
    firm.active.add_user("ann.lee@harbour.example")
    firm.configs.update(FIRM, connected_by_email="ann.lee@harbour.example")
    firm.xpm.staff = [ann.model_copy(update={"email": "ann.lee@harbour.example"})]

    run(firm)

    assert codes_of(firm) == ["STAFF_EMAIL_TAKEN"], codes_of(firm)


def _warned_manager_client(firm: Firm) -> tuple[Any, Any]:
    pat = staff("Pat Partner", "pat@harbour.example", uuid="staff-pat")
    mono = staff("Mononym", "mono@harbour.example", uuid="staff-mono")
    firm.xpm.staff += [pat, mono]
    record = client(partner=pat, job_manager_uuid=mono.uuid)
    firm.xpm.clients.append(record)
    run(firm)
    run(firm)  # out of the incremental window
    return mono, record


def test_a_preview_between_the_fix_and_the_next_run_does_not_hide_the_change_of_people(firm: Firm) -> None:
    _, record = _warned_manager_client(firm)
    user_id = firm.active.add_user("mono@harbour.example")
    preview(firm)
    run(firm)
    assert _client(firm, record.uuid).get("manager_user_id") == user_id


def test_a_manager_fixed_in_xpm_is_set_by_the_next_hourly_run(firm: Firm) -> None:
    mono, record = _warned_manager_client(firm)
    firm.xpm.staff = [firm.xpm.staff[0], mono.model_copy(update={"name": "Mono Nym"})]
    run(firm)
    assert _client(firm, record.uuid).get("manager_user_id") == _user_of(firm, mono.uuid)


def test_a_manager_moved_onto_an_active_users_email_is_set_by_the_next_run(firm: Firm) -> None:
    """Warned (no user), then XPM gives the manager the email of an existing hand-made user."""
    mono, record = _warned_manager_client(firm)
    hand = firm.active.add_user("m.nym@harbour.example")
    firm.xpm.staff = [firm.xpm.staff[0], mono.model_copy(update={"email": "m.nym@harbour.example"})]
    run(firm)
    assert _client(firm, record.uuid).get("manager_user_id") == hand


def test_a_newcomers_client_syncs_with_the_newcomers_own_user_once_the_email_is_free(firm: Firm) -> None:
    ann = staff("Ann Lee", "ann@harbour.example", uuid="staff-ann")
    firm.xpm.staff.append(ann)
    run(firm)
    bob = staff("Bob Stone", "ann@harbour.example", uuid="staff-bob")
    firm.xpm.staff = [ann.model_copy(update={"email": None}), bob]
    bobs_client = client("BOB01", partner=bob)
    firm.xpm.put(bobs_client, at=firm.clock.now())
    run(firm)
    (entry,) = [e for e in firm.runs.latest_entries() if e.xpm_uuid == bobs_client.uuid]
    assert entry.code == "PARTNER_NOT_IN_ACTIVE"
    assert "linked to another XPM staff member" in entry.message
    run(firm)  # an hour later: the client is out of the incremental window, retried from its copy

    firm.xpm.staff = [ann.model_copy(update={"email": "ann.lee@harbour.example"}), bob]  # Ann fixed in XPM
    done = run(firm)

    assert not done.full_read
    assert _client(firm, bobs_client.uuid)["partner_user_id"] == _user_of(firm, bob.uuid)
