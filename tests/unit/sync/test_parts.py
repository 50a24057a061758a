"""Runs split into parts (SPEC A7, A8, A5, B6): what a run in parts reports, counts and leaves.
Found by the probe of 2026-12-08 (the staff list read by a later part, a next part that could not
be queued, a Default Partner deleted between parts), with the cases that held as regression checks."""

from __future__ import annotations

from typing import Any

from xpm_sync.adapters.xpm.errors import XpmTooSlow

from tests.fakes import FIRM, Firm
from tests.unit.sync.builders import client, codes_of, run, staff, sync, with_partner


def _staff_list_too_slow_once(firm: Firm) -> None:
    """XPM's staff list answer drips past the part's reading deadline, once."""
    original = firm.xpm.list_staff
    calls = {"n": 0}

    def list_staff():
        calls["n"] += 1
        if calls["n"] == 1:
            firm.xpm.calls += 1
            raise XpmTooSlow("drip")
        return original()

    firm.xpm.list_staff = list_staff  # type: ignore[method-assign]


def test_a_run_whose_first_part_stops_at_the_staff_list_reports_and_counts_its_staff() -> None:
    firm = Firm()
    partner = with_partner(firm)
    firm.xpm.staff.append(staff("Cher", "cher@harbour.example"))  # a one-word name: an error (SPEC A3)
    firm.xpm.clients += [client(partner=partner) for _ in range(3)]
    first = run(firm)
    assert first.counts["user"]["failed"] == 1
    assert "user#" in "".join(firm.states.states), "the staff member's problem is open"
    user_keys = {k for k in firm.states.states if k.startswith("user#")}
    assert user_keys

    # When the next run's first part stops while XPM's staff list drips in
    _staff_list_too_slow_once(firm)
    part = sync(firm)
    assert part is not None
    assert part.continued
    last = sync(firm, resume_run_id=part.run.run_id)
    assert last is not None
    assert not last.continued

    # Then the staff member's problem is still open (nothing was fixed), and the run reported it
    assert not [p for p in firm.states.fixed if p.entity == "user"], firm.states.fixed
    assert last.run.status == "partial", last.run.status
    assert last.run.counts["user"]["failed"] == 1, last.run.counts["user"]
    assert "STAFF_NAME_MISSING" in codes_of(firm) or any(
        e.entity == "user" for e in firm.runs.latest_entries()
    ), codes_of(firm)
    assert user_keys <= set(firm.states.states), "the open problem was closed as fixed"
    assert not [p for p in firm.states.fixed if p.entity == "user"], firm.states.fixed


def test_a_run_whose_first_part_stops_at_the_staff_list_still_checks_the_connection_owner() -> None:
    firm = Firm()
    partner = with_partner(firm)
    firm.configs.update(FIRM, connected_by_email="gone@harbour.example")
    firm.xpm.clients += [client(partner=partner) for _ in range(3)]
    run(firm)
    assert firm.states.states["run"].codes == {"CONNECTION_OWNER_NOT_IN_XPM"}

    _staff_list_too_slow_once(firm)
    part = sync(firm)
    assert part is not None
    assert part.continued
    sync(firm, resume_run_id=part.run.run_id)

    # The owner is still not in XPM's staff list: SPEC A6 says every run warns
    assert "CONNECTION_OWNER_NOT_IN_XPM" in codes_of(firm), codes_of(firm)
    assert firm.states.states["run"].codes == {"CONNECTION_OWNER_NOT_IN_XPM"}


# --- a part stopping in the retries phase ------------------------------------------------------

import pytest  # noqa: E402
from xpm_sync.sync import clients as client_sync  # noqa: E402


class _Budget:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, firm: Firm, per_part: int) -> None:
        self.per_part, self.applied, self.firm = per_part, 0, firm
        original = client_sync.ClientSync.apply

        def counting(sync_, record, **kw):
            self.applied += 1
            if self.applied >= self.per_part:
                firm.seconds_left = 0.0
            return original(sync_, record, **kw)

        monkeypatch.setattr(client_sync.ClientSync, "apply", counting)

    def new_invocation(self) -> None:
        self.applied = 0
        self.firm.seconds_left = float("inf")


def _retry_world() -> tuple[Firm, object]:
    firm = Firm()
    partner = with_partner(firm)
    manager = staff("Manny")  # in XPM; a one-word name, so no Active user (MANAGER_NOT_IN_ACTIVE)
    firm.xpm.staff.append(manager)
    failing = [client(partner=None) for _ in range(10)]  # PARTNER_MISSING
    warned = [client(partner=partner, job_manager_uuid=manager.uuid) for _ in range(10)]
    mixed: list[Any] = []
    for pair in zip(failing, warned, strict=True):
        mixed += pair
    firm.xpm.clients += mixed
    run(firm)
    firm.xpm.staff.append(staff("Olga Other"))  # the people change: the warned copies are due
    return firm, None


def _outcome(firm: Firm, last: Any) -> tuple[Any, ...]:
    at = {c.uuid: f"#{i}" for i, c in enumerate(firm.xpm.clients)}  # the record by its place in XPM
    entries = sorted((e.code, at.get(e.xpm_uuid or "", e.entity)) for e in firm.runs.latest_entries())
    problems = {
        at.get(s.xpm_uuid or "", k.split("#")[0]): sorted((p.code, p.runs) for p in s.problems)
        for k, s in firm.states.states.items()
    }
    return last.run.status, last.run.counts, entries, problems, len(firm.states.fixed)


@pytest.mark.parametrize("per_part", [1, 3, 7, 11, 19])
def test_a_run_stopping_in_its_retries_ends_as_the_same_run_in_one_invocation(
    monkeypatch: pytest.MonkeyPatch, per_part: int
) -> None:
    whole, _ = _retry_world()
    one = sync(whole)
    assert one is not None
    assert not one.continued
    expected = _outcome(whole, one)

    firm, _ = _retry_world()
    budget = _Budget(monkeypatch, firm, per_part)
    result = sync(firm)
    parts = 1
    while result is not None and result.continued:
        budget.new_invocation()
        result = sync(firm, resume_run_id=result.run.run_id)
        parts += 1
    assert result is not None
    assert parts > 1
    got = _outcome(firm, result)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert got[2] == expected[2]
    assert got[3] == expected[3]
    assert got[4] == expected[4]


# --- the continuation that could not be queued -------------------------------------------------

from tests.fakes import OFFICE  # noqa: E402


def test_a_first_part_whose_continuation_could_not_be_queued_does_not_leave_the_firm_stalled() -> None:
    firm = Firm()
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(5)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    firm.queue.refusals = 1

    with pytest.raises(RuntimeError):
        sync(firm)  # the worker fails the record: SQS delivers it again

    # When SQS delivers the hourly message again (5 minutes later), XPM well again
    firm.xpm.break_after = None
    firm.clock.advance(minutes=5)
    again = sync(firm)

    # Then a run runs: nothing else will ever continue the one whose next part was never queued
    assert again is not None, "the redelivered message was dropped as 'left to the run continuing'"
    assert firm.queue.continuations or again.run.status in ("success", "partial")


def test_a_default_partner_deleted_between_parts_is_reported_with_the_clients_it_fails() -> None:
    firm = Firm()
    partner = with_partner(firm)
    default_partner = firm.active.add_user("dp@harbour.example")
    firm.active.add_office(OFFICE, default_partner_user_id=default_partner)
    firm.xpm.clients += [client(partner=partner), client(partner=partner)]
    firm.xpm.clients += [client(partner=None) for _ in range(3)]  # they need the default partner
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    part = sync(firm)
    assert part is not None
    assert part.continued

    # When the Default Partner's user is deleted in Active before the next part
    del firm.active.user_items[default_partner]
    firm.xpm.break_after = None
    last = sync(firm, resume_run_id=part.run.run_id)
    assert last is not None
    assert last.run.counts["client"]["failed"] == 3
    assert "PARTNER_MISSING" in codes_of(firm)
    # SPEC A6: a default partner no longer an Active user is a run-level error DEFAULT_PARTNER_NOT_IN_ACTIVE
    assert "DEFAULT_PARTNER_NOT_IN_ACTIVE" in codes_of(firm), codes_of(firm)


def test_a_partial_run_in_three_parts_asks_for_one_email() -> None:
    firm = Firm()
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=None), client(partner=partner), client(partner=None)]
    firm.xpm.clients += [client(partner=partner), client(partner=None), client(partner=partner)]
    resume = None
    for stop in ((2, XpmTooSlow("drip")), (4, XpmTooSlow("drip")), None):
        firm.xpm.break_after = stop
        result = sync(firm, resume_run_id=resume)
        assert result is not None
        resume = result.run.run_id
    assert result is not None
    assert result.run.status == "partial"
    assert result.run.counts["client"] == {
        "created": 3,
        "updated": 0,
        "unchanged": 0,
        "failed": 3,
        "skipped": 0,
    }
    assert len(firm.notifier.asked) == 1
    assert len(firm.runs.latest_entries()) == 3


def test_a_preview_between_two_parts_leaves_the_run_to_complete_as_one() -> None:
    from tests.unit.sync.builders import preview

    firm = Firm()
    partner = with_partner(firm)
    firm.xpm.clients += [client(partner=partner) for _ in range(3)] + [client(partner=None)]
    firm.xpm.break_after = (2, XpmTooSlow("drip"))
    part = sync(firm)
    assert part is not None
    assert part.continued
    firm.xpm.break_after = None
    planned = preview(firm)
    assert planned.status == "partial"
    last = sync(firm, resume_run_id=part.run.run_id)
    assert last is not None
    assert last.run.status == "partial"
    assert last.run.counts["client"]["created"] == 3
    assert firm.config.checkpoint is None
    assert firm.config.running_run_id is None
