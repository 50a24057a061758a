"""Two staff with one email both resolve to its user (SPEC A2, A3), and what a run in parts that
cannot queue its next part, or is closed as interrupted, leaves of Start Sync's gate (SPEC A6).
The second read of 2026-12-08."""

from __future__ import annotations

from typing import Any

import pytest
from xpm_sync.adapters.xpm.errors import XpmTooSlow
from xpm_sync.domain.start_sync import refusal
from xpm_sync.sync.engine import run_sync

from tests.fakes import FIRM, Firm
from tests.unit.sync.builders import client, run, staff, with_partner


def _client(firm: Firm, xpm_uuid: str) -> dict[str, Any]:
    [item] = [item for item in firm.active.client_items.values() if item.get("xpm_uuid") == xpm_uuid]
    return item


@pytest.mark.parametrize("order", ["keeper first", "duplicate first"])
def test_a_partner_sharing_an_email_with_another_xpm_staff_member_still_resolves_by_that_email(
    order: str,
) -> None:
    """SPEC A2: "A client's Partner must exist in Active as a user whose email matches the partner's
    XPM email"; A3: AccountManager is "resolved to an Active user through that staff member's email".
    Two XPM staff records share jane@ (XPM allows it: a second record for the same person). The
    Active user jane@ exists. The client whose Partner is the second record has a Partner whose XPM
    email matches an Active user, so it syncs with that user (as it did before b40934a)."""
    firm = Firm()
    jane_user = firm.active.add_user("jane@harbour.example")
    jane = staff("Jane Smith", "jane@harbour.example", uuid="staff-jane")
    jane_tax = staff("Jane Smith Tax", "jane@harbour.example", uuid="staff-jane-tax")
    firm.xpm.staff = [jane, jane_tax] if order == "keeper first" else [jane_tax, jane]
    theirs = client("TAX01", partner=jane_tax if order == "keeper first" else jane)
    firm.xpm.clients.append(theirs)

    run(firm)

    entries = [(e.code, e.message) for e in firm.runs.latest_entries() if e.xpm_uuid == theirs.uuid]
    assert entries == [], entries
    assert _client(firm, theirs.uuid)["partner_user_id"] == jane_user


def test_a_manager_sharing_an_email_with_another_xpm_staff_member_still_resolves_by_that_email() -> None:
    """SPEC A3: JobManager is "resolved the same way" (through the staff member's email)."""
    firm = Firm()
    jane_user = firm.active.add_user("jane@harbour.example")
    pat_user = firm.active.add_user("pat@harbour.example")
    pat = staff("Pat Partner", "pat@harbour.example", uuid="staff-pat")
    jane = staff("Jane Smith", "jane@harbour.example", uuid="staff-jane")
    jane_tax = staff("Jane Smith Tax", "jane@harbour.example", uuid="staff-jane-tax")
    firm.xpm.staff = [pat, jane, jane_tax]
    managed = client("MGR01", partner=pat, job_manager_uuid=jane_tax.uuid)
    firm.xpm.clients.append(managed)

    run(firm)

    item = _client(firm, managed.uuid)
    assert item["partner_user_id"] == pat_user
    assert item.get("manager_user_id") == jane_user, [
        (e.code, e.message) for e in firm.runs.latest_entries() if e.xpm_uuid == managed.uuid
    ]


# --- a next part that could not be queued (3d6f267) ---------------------------------------------


def _a_run_whose_first_part_continued() -> tuple[Firm, str]:
    """A firm of six clients whose scheduled run stopped after two, its next part queued."""
    firm = Firm()
    firm.xpm.clients += [client(partner=with_partner(firm)) for _ in range(6)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    first = run_sync(FIRM, "schedule", firm.services())
    assert first is not None
    assert first.continued
    return firm, first.run.run_id


def test_the_admins_run_whose_next_part_could_not_be_queued_keeps_start_sync_shut_until_delivered() -> None:
    """SPEC A6: Start Sync "while a run is queued or running ... queues nothing and answers 429".
    The admin's run (first part) ran out of time and SQS refused the continuation: the worker fails
    the record and SQS delivers it again (not its last delivery), so the admin's run is still
    queued. 3d6f267 cleared the claim there, and a second manual run could be queued behind it."""
    firm = Firm()
    firm.configs.update(FIRM, run_pending=True, manual_requested_at="2026-03-02T08:45:00Z")
    firm.xpm.clients += [client(partner=with_partner(firm)) for _ in range(5)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    firm.queue.refusals = 1

    with pytest.raises(RuntimeError):
        run_sync(FIRM, "manual", firm.services(), delivered_again_on_failure=True)

    assert firm.config.run_pending is True, "SQS delivers the admin's request again: it is still queued"


def test_a_later_part_whose_next_part_could_not_be_queued_is_carried_on_by_its_redelivery() -> None:
    """A run in three parts; SQS refuses the third part's message once, when the second part queues
    it. The worker fails the second part's record and SQS delivers it again, and the redelivered
    part finds its checkpoint and carries the run on to its end. 3d6f267 ended the run there
    instead, and the redelivered part found it ended: a passing SQS error failed a run that could
    complete."""
    firm, run_id = _a_run_whose_first_part_continued()
    services = firm.services()

    firm.xpm.break_after = (4, XpmTooSlow("drip"))
    firm.queue.refusals = 1
    with pytest.raises(RuntimeError):
        run_sync(FIRM, "schedule", services, resume_run_id=run_id, delivered_again_on_failure=True)

    # SQS delivers the second part's message again; XPM answers in time now
    firm.xpm.break_after = None
    firm.clock.advance(minutes=15)
    again = run_sync(FIRM, "schedule", services, resume_run_id=run_id, delivered_again_on_failure=True)
    while again is not None and again.continued:
        again = run_sync(FIRM, "schedule", services, resume_run_id=run_id)

    ended = firm.runs.get_run(FIRM, run_id)
    assert ended is not None
    assert ended.status == "success", (
        ended.status,
        [(e.code, e.message) for e in firm.runs.latest_entries()],
    )


def test_a_manual_run_closed_as_interrupted_by_the_next_run_reopens_start_sync() -> None:
    """SPEC A6: 429 only "while a run is queued or running". The admin's run stopped in parts and
    its continuation was lost (dead-lettered, say); the next hourly run closes it as interrupted
    (_close_interrupted) and completes. Nothing of the admin's was queued or running, yet Start Sync
    answered 429 "A sync is already queued or running" until 6 hours after the press."""
    from tests.unit.sync.builders import sync

    firm = Firm()
    firm.configs.update(FIRM, run_pending=True, manual_requested_at="2026-03-02T08:59:00Z")
    firm.xpm.clients += [client(partner=with_partner(firm)) for _ in range(5)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    first = sync(firm, trigger="manual")
    assert first is not None
    assert first.continued
    firm.queue.continuations.clear()  # the next part never comes
    firm.xpm.break_after = None
    firm.clock.advance(hours=2)
    hourly = sync(firm, trigger="schedule")
    assert hourly is not None
    assert hourly.run.status == "success"
    assert firm.runs.get_run(FIRM, first.run.run_id).status == "failed"  # type: ignore[union-attr]

    assert firm.config.run_pending is False, "the admin's run ended; Start Sync stays shut for hours"


def test_a_later_part_on_its_last_delivery_whose_next_part_cannot_be_queued_ends_its_run() -> None:
    """Nothing will continue the run: left running with its checkpoint, it held Start Sync ("a
    sync is running") and the hourly runs for two hours. The last read of 2026-12-08."""
    firm, run_id = _a_run_whose_first_part_continued()
    services = firm.services()

    # The second part's message is on its last delivery (receive count 3 of maxReceiveCount 3),
    # it runs out of time again, and SQS refuses its continuation.
    firm.xpm.break_after = (4, XpmTooSlow("drip"))
    firm.queue.refusals = 1
    with pytest.raises(RuntimeError):
        run_sync(FIRM, "schedule", services, resume_run_id=run_id, delivered_again_on_failure=False)

    # Nothing will ever continue the run: the record is dead-lettered.
    firm.xpm.break_after = None
    firm.clock.advance(minutes=60)
    assert refusal(firm.config, firm.clock.now()).message.startswith("A sync is running") is False, (
        "Start Sync answers 429 'A sync is running' while nothing is queued or running"
    )
    hourly = run_sync(FIRM, "schedule", services)
    assert hourly is not None, "the next hourly run was dropped, 'left to' a part nobody queued"
