"""SPEC B5 / B6 (issue 21 item 1): Sync Monitoring reads what is wrong now, not run by run.

Given open problems the sync keeps per record (and problems fixed since the last email); when an
admin lists them or asks for the summary; then each open (record, code) pair is one item with the
runs that saw it, the summary groups them by code as the email does, and a firm sees only its own.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from xpm_sync.domain.entries import CATALOGUE
from xpm_sync.domain.runs import RUN_RETENTION

from tests.fixtures.api import FIRM, OTHER_FIRM, Answer, ApiHarness, admin_claims, every_page
from tests.fixtures.monitoring import (
    FIRST_SEEN,
    LAST_SEEN,
    WRITTEN_AT,
    fixed,
    problem,
    record_state,
    write_states,
)

XPM_PAGE = "https://practicemanager.xero.com/Client/1001/Detail"

pytestmark = pytest.mark.usefixtures("read_the_day_after")


def _problems(api: ApiHarness, firm_id: str = FIRM, **query: str) -> Answer:
    return api.call_api("get_problems", query=query or None, claims=admin_claims(firm_id))


def _summary(api: ApiHarness, firm_id: str = FIRM) -> Answer:
    return api.call_api("get_problems_summary", claims=admin_claims(firm_id))


@pytest.fixture
def open_problems(api: ApiHarness) -> ApiHarness:
    """Firm A: a client with two problems, one with a partner missing, a staff member without a
    surname, a client XPM sent without a UUID, and the run's own problem; firm B: one client."""
    write_states(
        api.names,
        FIRM,
        [
            record_state(
                "client",
                "c-1",
                "Acme Pty Ltd (ACME01)",
                problem("PARTNER_NOT_IN_ACTIVE", runs=5),
                problem("ABN_INVALID", message="ABN 123 fails its checksum"),
                web_url=XPM_PAGE,
            ),
            record_state("client", "c-2", "Bravo (BRA01)", problem("PARTNER_NOT_IN_ACTIVE")),
            record_state(
                "user", "s-1", "Cher", problem("STAFF_SURNAME_MISSING", first_seen=LAST_SEEN, runs=1)
            ),
            record_state("client", None, "No Uuid (NU01)", problem("CLIENT_UUID_MISSING")),
            record_state("run", None, "Sync run", problem("CONNECTION_OWNER_NOT_IN_XPM")),
        ],
    )
    write_states(
        api.names, OTHER_FIRM, [record_state("client", "z-1", "Theirs (Z1)", problem("PARTNER_MISSING"))]
    )
    return api


def test_each_open_record_and_code_pair_is_one_problem_with_its_history(open_problems: ApiHarness) -> None:
    answer = _problems(open_problems)

    assert answer.status == 200
    assert answer.json["next_cursor"] is None
    found = {(p["label"], p["code"]): p for p in answer.json["problems"]}
    assert len(answer.json["problems"]) == 6
    acme = found[("Acme Pty Ltd (ACME01)", "PARTNER_NOT_IN_ACTIVE")]
    assert acme == {
        "code": "PARTNER_NOT_IN_ACTIVE",
        "severity": "error",
        "entity": "client",
        "xpm_uuid": "c-1",
        "label": "Acme Pty Ltd (ACME01)",
        "message": "PARTNER_NOT_IN_ACTIVE message",
        "suggestion": CATALOGUE["PARTNER_NOT_IN_ACTIVE"].suggestion,
        "first_seen": FIRST_SEEN,
        "last_seen": LAST_SEEN,
        "runs": 5,
        "web_url": XPM_PAGE,
    }
    abn = found[("Acme Pty Ltd (ACME01)", "ABN_INVALID")]
    assert (abn["severity"], abn["message"], abn["web_url"]) == (
        "warning",
        "ABN 123 fails its checksum",
        XPM_PAGE,
    )
    assert found[("Cher", "STAFF_SURNAME_MISSING")]["entity"] == "user"


def test_a_run_level_problem_and_a_record_without_uuid_carry_no_xpm_uuid(open_problems: ApiHarness) -> None:
    found = {p["label"]: p for p in _problems(open_problems).json["problems"]}

    run_level = found["Sync run"]
    assert (run_level["entity"], run_level["code"]) == ("run", "CONNECTION_OWNER_NOT_IN_XPM")
    assert "xpm_uuid" not in run_level
    assert "xpm_uuid" not in found["No Uuid (NU01)"]


def test_only_a_record_xpm_sent_a_link_for_carries_web_url(open_problems: ApiHarness) -> None:
    found = {p["label"]: p for p in _problems(open_problems).json["problems"]}

    assert found["Acme Pty Ltd (ACME01)"]["web_url"] == XPM_PAGE
    assert "web_url" not in found["Bravo (BRA01)"]
    assert "web_url" not in found["Sync run"]


def test_problems_filter_by_code_and_by_entity(open_problems: ApiHarness) -> None:
    partner = _problems(open_problems, code="PARTNER_NOT_IN_ACTIVE").json["problems"]
    users = _problems(open_problems, entity="user").json["problems"]
    runs = _problems(open_problems, entity="run").json["problems"]
    both = _problems(open_problems, code="ABN_INVALID", entity="client").json["problems"]
    nothing = _problems(open_problems, code="ABN_INVALID", entity="user").json["problems"]

    assert sorted(p["label"] for p in partner) == ["Acme Pty Ltd (ACME01)", "Bravo (BRA01)"]
    assert {p["code"] for p in partner} == {"PARTNER_NOT_IN_ACTIVE"}, "the record's other codes stay out"
    assert [p["code"] for p in users] == ["STAFF_SURNAME_MISSING"]
    assert [p["code"] for p in runs] == ["CONNECTION_OWNER_NOT_IN_XPM"]
    assert [(p["label"], p["code"]) for p in both] == [("Acme Pty Ltd (ACME01)", "ABN_INVALID")]
    assert nothing == []


@pytest.mark.parametrize(("name", "value"), [("entity", "office"), ("entity", "CLIENT"), ("code", "X" * 65)])
def test_a_filter_no_problem_can_have_is_422_naming_it(
    open_problems: ApiHarness, name: str, value: str
) -> None:
    answer = _problems(open_problems, **{name: value})

    assert answer.status == 422
    assert answer.json["error"]["field"] == name


def test_a_firm_sees_only_its_own_problems(open_problems: ApiHarness) -> None:
    theirs = _problems(open_problems, firm_id=OTHER_FIRM).json["problems"]

    assert [(p["label"], p["code"]) for p in theirs] == [("Theirs (Z1)", "PARTNER_MISSING")]
    assert "Theirs (Z1)" not in _problems(open_problems).text


def test_the_problems_of_a_firm_with_none_are_an_empty_page(api: ApiHarness) -> None:
    answer = _problems(api)

    assert answer.status == 200
    assert answer.json == {"problems": [], "next_cursor": None}


def test_problems_page_by_record_to_the_end(api: ApiHarness) -> None:
    write_states(
        api.names,
        FIRM,
        [
            record_state(
                "client", f"c-{n:04d}", f"Client {n:04d}", problem("PARTNER_MISSING"), problem("ABN_INVALID")
            )
            for n in range(230)
        ],
    )

    pages = every_page(lambda query: _problems(api, **query))
    seen = [(p["label"], p["code"]) for page in pages for p in page.json["problems"]]

    assert len(pages) == 3  # 100 records (200 problems), 100, 30
    assert len(seen) == len(set(seen)) == 460


# --- The summary: by code, as the email leads with it -------------------------------------------


def test_the_summary_groups_open_problems_by_code_with_counts_examples_and_the_fix(
    open_problems: ApiHarness,
) -> None:
    answer = _summary(open_problems)

    assert answer.status == 200
    body = answer.json
    assert body["open"] == 6
    groups = {group["code"]: group for group in body["groups"]}
    assert groups["PARTNER_NOT_IN_ACTIVE"] == {
        "code": "PARTNER_NOT_IN_ACTIVE",
        "severity": "error",
        "count": 2,
        "suggestion": CATALOGUE["PARTNER_NOT_IN_ACTIVE"].suggestion,
        "examples": ["Acme Pty Ltd (ACME01)", "Bravo (BRA01)"],
    }
    assert body["groups"][0]["code"] == "CONNECTION_OWNER_NOT_IN_XPM", "a run-level problem leads"
    assert groups["ABN_INVALID"]["severity"] == "warning"
    assert set(body) == {"groups", "open", "fixed_since_last_email"}


def test_a_groups_examples_are_at_most_five_labels(api: ApiHarness) -> None:
    write_states(
        api.names,
        FIRM,
        [record_state("client", f"c-{n}", f"Client {n}", problem("PARTNER_MISSING")) for n in range(40)],
    )

    [group] = _summary(api).json["groups"]

    assert group["count"] == 40
    assert len(group["examples"]) == 5


def test_fixed_since_last_email_counts_what_closed_after_the_last_email(open_problems: ApiHarness) -> None:
    write_states(
        open_problems.names,
        FIRM,
        [],
        fixed=[
            fixed("PARTNER_MISSING", "Fixed before (F1)", "2026-03-01T08:00:00Z"),
            fixed("PARTNER_MISSING", "Fixed after (F2)", "2026-03-01T10:00:00Z"),
            fixed("ABN_INVALID", "Fixed after (F3)", "2026-03-02T10:00:00Z"),
        ],
    )
    write_states(
        open_problems.names, OTHER_FIRM, [], fixed=[fixed("ABN_INVALID", "Theirs", "2026-03-02T10:00:00Z")]
    )
    never_emailed = _summary(open_problems).json["fixed_since_last_email"]
    open_problems.update_config(last_notified_at="2026-03-01T09:00:00Z")

    since_the_email = _summary(open_problems).json["fixed_since_last_email"]

    assert never_emailed == 3, "never emailed: every fix the log keeps"
    assert since_the_email == 2


def test_a_fix_past_its_90_days_no_longer_counts_before_dynamodb_deletes_it(
    open_problems: ApiHarness,
) -> None:
    write_states(
        open_problems.names, FIRM, [], fixed=[fixed("PARTNER_MISSING", "Fixed (F1)", "2026-03-01T10:00:00Z")]
    )
    counted = _summary(open_problems).json["fixed_since_last_email"]

    open_problems.clock.set(WRITTEN_AT + RUN_RETENTION + timedelta(hours=1))

    assert counted == 1
    assert _summary(open_problems).json["fixed_since_last_email"] == 0


def test_the_summary_of_a_firm_with_no_problems_is_empty(api: ApiHarness) -> None:
    assert _summary(api).json == {"groups": [], "open": 0, "fixed_since_last_email": 0}
