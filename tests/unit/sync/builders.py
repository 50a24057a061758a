"""XPM records and runs for the sync's unit tests, written the way XPM sends them."""

from __future__ import annotations

import itertools
from typing import Any

from xpm_sync.domain.runs import SyncRun
from xpm_sync.domain.xpm_records import XpmClientRecord, XpmStaff
from xpm_sync.sync.engine import RunResult, run_sync

from tests.fakes import FIRM, Firm

_numbers = itertools.count(1)


def staff(name: str = "Pat Partner", email: str | None = None, *, uuid: str | None = None) -> XpmStaff:
    number = next(_numbers)
    first = name.split()[0].lower()
    return XpmStaff(
        uuid=uuid or f"staff-{number}", name=name, email=email or f"{first}{number}@harbour.example"
    )


def client(code: str | None = None, *, partner: XpmStaff | None = None, **fields: Any) -> XpmClientRecord:
    number = next(_numbers)
    values: dict[str, Any] = {
        "uuid": f"client-{number}",
        "name": f"Client {number} Pty Ltd",
        "client_code": code if code is not None else f"C{number:04d}",
        "business_structure": "Company",
        "account_manager_uuid": partner.uuid if partner is not None else None,
    }
    values.update(fields)
    return XpmClientRecord(**values)


def with_partner(firm: Firm) -> XpmStaff:
    """A partner who is an Active user and an XPM staff member."""
    partner = staff("Pat Partner")
    firm.xpm.staff.append(partner)
    firm.active.add_user(partner.email or "")
    return partner


def synced_clients(firm: Firm, *codes: str) -> list[XpmClientRecord]:
    """Clients with these codes, under one partner, already synced to Active by one run."""
    partner = with_partner(firm)
    records = [client(code, partner=partner) for code in codes]
    firm.xpm.clients += records
    run(firm)
    return records


def archive(firm: Firm, record: XpmClientRecord, **changes: Any) -> XpmClientRecord:
    """The practice archives a client in XPM now (with ``changes`` made at the same time)."""
    archived = record.model_copy(update={"is_archived": True, **changes})
    firm.xpm.put(archived, at=firm.clock.now())
    return archived


def synced_then_archived(firm: Firm, code: str) -> tuple[XpmStaff, XpmClientRecord]:
    """A client synced to Active, then archived in XPM and marked so by the next run; its partner."""
    partner = with_partner(firm)
    record = client(code, partner=partner)
    firm.xpm.clients.append(record)
    run(firm)
    archive(firm, record)
    run(firm)
    return partner, record


def renumber(firm: Firm, record: XpmClientRecord, code: str) -> None:
    """The practice gives a client a new code in XPM, now."""
    firm.xpm.put(record.model_copy(update={"client_code": code}), at=firm.clock.now())


def run(firm: Firm, *, trigger: str = "schedule") -> SyncRun:
    result = sync(firm, trigger=trigger)
    assert result is not None, "the run did nothing"
    return result.run


def sync(firm: Firm, *, trigger: str = "schedule", **kwargs: Any) -> RunResult | None:
    result = run_sync(FIRM, trigger, firm.services(), **kwargs)  # type: ignore[arg-type]
    firm.clock.advance(hours=1)
    return result


def preview(firm: Firm) -> SyncRun:
    """A dry run queued as POST preview queues it (SPEC B6), then run: the run it recorded."""
    return dry_run(firm).run


def dry_run(firm: Firm) -> RunResult:
    queued = SyncRun(
        firm_id=FIRM,
        run_id=f"{firm.clock.now():%Y%m%dT%H%M%S%fZ}-preview",
        trigger="manual",
        status="running",
        started_at=f"{firm.clock.now():%Y-%m-%dT%H:%M:%SZ}",
        dry_run=True,
    )
    firm.runs.save_run(queued, firm.clock.now())
    result = sync(firm, dry_run_id=queued.run_id)
    assert result is not None, "the preview did nothing"
    return result


def codes_of(firm: Firm) -> list[str]:
    return [entry.code for entry in firm.runs.latest_entries()]
