"""The sync log table's per-record state, suggested links and paged error logs (SPEC B3, B5, B6),
on moto in process through the functions' own ``Table``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.adapters.cursors import CursorSigner, forget_keys
from xpm_sync.adapters.dynamodb import Table
from xpm_sync.adapters.sync_log import Matches, RecordStates, RunLog
from xpm_sync.domain import entries as codes
from xpm_sync.domain.active_records import StoredClient
from xpm_sync.domain.entries import MAX_LABEL_CHARS, EntryEntity
from xpm_sync.domain.errors import InvalidCursor
from xpm_sync.domain.near_match import Suggestion
from xpm_sync.domain.problems import ClosedProblem, Problem, RecordState
from xpm_sync.domain.runs import RUN_RETENTION, SyncRun

from local.stack import StackNames
from tests.fakes import FakeClock

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FIRM = "firm-a"


@pytest.fixture
def tables(aws: StackNames) -> Iterator[tuple[Table, Table]]:
    """The sync log and config tables, as template.yaml defines them (moto in process)."""
    forget_keys()
    aws_clients.clear_clients()
    yield aws_clients.table(aws.sync_log_table), aws_clients.table(aws.config_table)
    forget_keys()


def _run(firm_id: str = FIRM, run_id: str = "20260302T090000000000Z-aaaa0001") -> SyncRun:
    return SyncRun(
        firm_id=firm_id,
        run_id=run_id,
        trigger="schedule",
        status="partial",
        started_at="2026-03-02T09:00:00Z",
    )


def _state(
    key: str, *problem_codes: str, copy: str | None = None, entity: EntryEntity = "client"
) -> RecordState:
    problems = tuple(
        Problem(
            code=code,
            severity="error",
            message=f"{code} here",
            suggestion="fix it",
            first_seen="2026-03-02T09:00:00Z",
            last_seen="2026-03-02T09:00:00Z",
            runs=1,
        )
        for code in problem_codes
    )
    return RecordState(
        entity=entity, key=key, label=f"Label of {key}", problems=problems, xpm_uuid=key, retry_copy=copy
    )


def test_a_run_in_parts_and_its_whole_log_expire_at_one_moment_90_days_from_its_start(
    tables: tuple[Table, Table],
) -> None:
    # The review of 2026-12-07 (night): each part's entries expired 90 days after that part, the
    # run item 90 days after its end; read in between, the run was listed with part of its log gone.
    sync_log, config = tables
    run = _run()
    log = RunLog(sync_log)
    found = [
        codes.PARTNER_NOT_IN_ACTIVE.entry(label=f"Acme {n}", message="m", xpm_uuid=f"u{n}") for n in range(3)
    ]
    run.entry_count = log.add_entries(run, found[:1], NOW + timedelta(minutes=15))  # the first part
    run.entry_count = log.add_entries(run, found[1:], NOW + timedelta(hours=2), start=run.entry_count)
    log.save_run(run, NOW + timedelta(hours=2))  # the run's end

    stored = sync_log.query_items(
        KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"RUN#{FIRM}#{run.run_id}"}
    )
    [run_item] = sync_log.query_items(
        KeyConditionExpression="pk = :pk AND sk = :sk",
        ExpressionAttributeValues={":pk": f"FIRM#{FIRM}", ":sk": f"RUN#{run.run_id}"},
    )
    expected = int((NOW + RUN_RETENTION).timestamp())
    assert {int(item["expires_at"]) for item in stored} == {expected}
    assert int(run_item["expires_at"]) == expected
    for moment in (NOW + RUN_RETENTION - timedelta(seconds=1), NOW + RUN_RETENTION + timedelta(minutes=20)):
        reader = RunLog(sync_log, CursorSigner(config), FakeClock(moment))
        shown = reader.get_run(FIRM, run.run_id)
        entries, _ = reader.entries_page(FIRM, run.run_id)
        assert (shown.entry_count if shown else 0) == len(entries), moment


def test_entries_page_errors_first_with_a_verified_cursor(tables: tuple[Table, Table]) -> None:
    log_table, config_table = tables
    log = RunLog(log_table, CursorSigner(config_table))
    run = _run()
    warnings = [codes.ABN_INVALID.entry(label=f"W{i}", message="m") for i in range(60)]
    errors = [codes.PARTNER_MISSING.entry(label=f"E{i}", message="m") for i in range(80)]
    log.add_entries(
        run, [item for pair in zip(warnings, errors, strict=False) for item in pair] + errors[60:], NOW
    )

    first, cursor = log.entries_page(FIRM, run.run_id)
    second, end = log.entries_page(FIRM, run.run_id, cursor=cursor)

    assert len(first) == 100
    assert [e.severity for e in first[:80]] == ["error"] * 80
    assert len(second) == 40
    assert end is None
    assert [e.label for e in first + second] == [f"E{i}" for i in range(80)] + [f"W{i}" for i in range(60)]


def test_entries_filter_by_severity_and_code_page_exactly(tables: tuple[Table, Table]) -> None:
    log_table, config_table = tables
    log = RunLog(log_table, CursorSigner(config_table))
    run = _run()
    mixed = [
        (codes.PARTNER_MISSING if i % 3 else codes.CLIENT_CODE_MISSING).entry(label=f"E{i}", message="m")
        for i in range(450)
    ]
    log.add_entries(run, mixed, NOW)

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = log.entries_page(
            FIRM, run.run_id, code="CLIENT_CODE_MISSING", severity="error", cursor=cursor
        )
        assert len(page) <= 100
        seen += [e.label for e in page]
        if cursor is None:
            break
    assert seen == [f"E{i}" for i in range(0, 450, 3)]


def _log_with_a_second_page(tables: tuple[Table, Table]) -> tuple[RunLog, str]:
    """A run log whose run has 101 entries, and the cursor to its second page."""
    log_table, config_table = tables
    log = RunLog(log_table, CursorSigner(config_table))
    log.add_entries(_run(), [codes.ABN_INVALID.entry(label=f"W{i}", message="m") for i in range(101)], NOW)
    _, cursor = log.entries_page(FIRM, _run().run_id)
    assert cursor is not None
    return log, cursor


@pytest.mark.parametrize("tamper", ["garbage", "a.b", "", "x" * 2000])
def test_a_forged_cursor_is_refused(tables: tuple[Table, Table], tamper: str) -> None:
    log, cursor = _log_with_a_second_page(tables)

    with pytest.raises(InvalidCursor):
        log.entries_page(FIRM, _run().run_id, cursor=tamper or cursor[:-2] + "AA")


def test_another_firms_or_another_lists_cursor_is_refused(tables: tuple[Table, Table]) -> None:
    log, cursor = _log_with_a_second_page(tables)

    with pytest.raises(InvalidCursor):
        log.entries_page("firm-b", _run().run_id, cursor=cursor)
    with pytest.raises(InvalidCursor):
        log.entries_page(FIRM, _run().run_id, cursor=cursor, severity="warning")
    with pytest.raises(InvalidCursor):
        log.list_runs(FIRM, cursor=cursor)


def test_record_states_round_trip_and_a_closed_problem_counts_as_fixed(tables: tuple[Table, Table]) -> None:
    log_table, config_table = tables
    states = RecordStates(log_table, FIRM, CursorSigner(config_table))
    copy = '{"uuid": "u1", "name": "Acme"}'
    states.write(
        [_state("client#u1", "PARTNER_MISSING", copy=copy), _state("client#u2", "ABN_INVALID")], [], [], NOW
    )

    loaded = states.load()
    without_copies = states.load(with_copies=False)

    assert loaded["client#u1"].retry_copy == copy
    assert loaded["client#u1"].codes == {"PARTNER_MISSING"}
    assert without_copies["client#u1"].retry_copy is None
    states.write(
        [],
        ["client#u1"],
        [
            ClosedProblem(
                entity="client",
                key="client#u1",
                code="PARTNER_MISSING",
                label="Acme",
                closed_at="2026-03-02T10:00:00Z",
            )
        ],
        NOW,
    )
    assert set(states.load()) == {"client#u2"}
    assert len(list(states.fixed_after("2026-03-02T09:30:00Z"))) == 1
    assert list(states.fixed_after("2026-03-02T10:30:00Z")) == []


def test_open_problems_page_by_code_and_entity(tables: tuple[Table, Table]) -> None:
    log_table, config_table = tables
    states = RecordStates(log_table, FIRM, CursorSigner(config_table))
    states.write(
        [_state(f"client#c{i:04d}", "PARTNER_MISSING" if i % 2 else "ABN_INVALID") for i in range(250)]
        + [_state("user#s1", "STAFF_EMAIL_MISSING", entity="user")],
        [],
        [],
        NOW,
    )

    found: list[str] = []
    cursor = None
    while True:
        page, _, cursor = states.open_page(cursor=cursor, code="PARTNER_MISSING", entity="client", limit=100)
        found += [state.key for state in page]
        if cursor is None:
            break

    assert found == [f"client#c{i:04d}" for i in range(1, 250, 2)]
    users, _, _ = states.open_page(cursor=None, code=None, entity="user", limit=100)
    assert [state.key for state in users] == ["user#s1"]


def test_suggestions_keep_the_admins_answer_and_the_unlinked_snapshot_follows_the_full_read(
    tables: tuple[Table, Table],
) -> None:
    log_table, config_table = tables
    matches = Matches(log_table, FIRM, CursorSigner(config_table))
    suggestion = Suggestion(
        xpm_uuid="u1", label="Acme (A1)", client_id="c1", client_label="Acme", reason="name"
    )
    matches.suggest(suggestion)

    matches.answer(replace(suggestion, answer="link"))

    assert matches.load()["u1"].answer == "link"
    trial = StoredClient("c1", {"legal_name": "Acme"})
    matches.replace_unlinked([trial], [])
    assert matches.unlinked() == [trial]
    matches.replace_unlinked([], [trial])
    assert matches.unlinked() == []


def test_a_suggestion_between_names_past_the_item_limit_is_kept_with_its_labels_cut(
    tables: tuple[Table, Table],
) -> None:
    log_table, config_table = tables
    matches = Matches(log_table, FIRM, CursorSigner(config_table))
    huge = "Acme " * 90_000  # 450,000 characters each: together far past DynamoDB's 400 KB

    suggestion = Suggestion(xpm_uuid="u1", label=huge, client_id="c1", client_label=huge, reason="name")
    matches.suggest(suggestion)
    matches.answer(replace(suggestion, answer="link", client_id="c2"))

    kept = matches.load()["u1"]
    assert (kept.answer, kept.client_id) == ("link", "c2")
    assert len(kept.label) == len(kept.client_label) == MAX_LABEL_CHARS
    assert kept.label.startswith("Acme Acme")
    assert kept.label.endswith("…")


def test_a_cursor_after_the_longest_sort_key_in_any_script_is_one_the_api_takes_back(
    tables: tuple[Table, Table],
) -> None:
    _, config_table = tables
    signer = CursorSigner(config_table)
    longest = "é" * 512  # 1,024 bytes in UTF-8: DynamoDB's limit for a sort key
    scope = {"list": "matches", "firm": FIRM}

    assert signer.decode(signer.encode(scope, longest), scope) == longest
