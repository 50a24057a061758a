"""Whose fault a run's trouble is (issue 21, operator signals): the system's or the firm's."""

from __future__ import annotations

import pytest
from xpm_sync.domain.entries import CATALOGUE
from xpm_sync.domain.faults import FIRM_PROBLEM_CODES, SYSTEM_FAULT_CODES, failed_run_fault, system_faults

RUN_LEVEL_CODES = {code for code, kind in CATALOGUE.items() if kind.entity == "run"}


def test_every_run_level_code_has_exactly_one_owner() -> None:
    # A new run-level code must be classified before it ships: unclassified, a firm's own problem
    # would page operators (or a system fault would hide among firms' problems).
    assert not SYSTEM_FAULT_CODES & FIRM_PROBLEM_CODES
    assert RUN_LEVEL_CODES <= SYSTEM_FAULT_CODES | FIRM_PROBLEM_CODES


def test_record_codes_are_never_classified_as_run_faults() -> None:
    record_codes = {code for code, kind in CATALOGUE.items() if kind.entity != "run"}

    assert not record_codes & (SYSTEM_FAULT_CODES | FIRM_PROBLEM_CODES)


@pytest.mark.parametrize(
    ("code", "owner"),
    [
        ("XPM_UNAVAILABLE", "system"),
        ("XPM_RATE_LIMITED", "system"),
        ("INTERNAL_ERROR", "system"),
        ("XERO_APP_CREDENTIALS_INVALID", "system"),
        ("XPM_TOO_SLOW", "system"),
        ("XPM_NEEDS_RECONNECT", "firm"),
        ("XPM_WRONG_TENANT", "firm"),
        ("SYNC_NOT_CONFIGURED", "firm"),
        ("DEFAULT_OFFICE_MISSING", "firm"),
    ],
)
def test_a_failed_run_is_owned_as_issue_21_says(code: str, owner: str) -> None:
    assert failed_run_fault("failed", [code]) == owner


def test_a_failed_run_that_names_no_firm_problem_is_the_systems() -> None:
    # Nobody can place it, so it must reach an operator rather than hide.
    assert failed_run_fault("failed", []) == "system"
    assert failed_run_fault("failed", ["SOMETHING_NEW"]) == "system"


def test_a_system_fault_wins_over_a_firm_problem_in_the_same_run() -> None:
    assert failed_run_fault("failed", ["NOTIFICATION_USER_INVALID", "XPM_UNAVAILABLE"]) == "system"
    assert failed_run_fault("failed", ["NOTIFICATION_USER_INVALID", "DEFAULT_OFFICE_MISSING"]) == "firm"


@pytest.mark.parametrize("status", ["success", "partial", "running"])
def test_a_run_that_did_not_fail_is_nobodys_fault(status: str) -> None:
    assert failed_run_fault(status, ["XPM_UNAVAILABLE"]) is None


def test_system_faults_picks_the_systems_codes_out_of_a_runs_codes() -> None:
    assert system_faults(["CONNECTION_OWNER_NOT_IN_XPM", "XPM_RATE_LIMITED"]) == {"XPM_RATE_LIMITED"}
