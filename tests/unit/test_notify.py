"""The failure email (SPEC A5, B3): at most one per firm per 24 hours, a failed send uses up nothing;
it leads with what is new since the last email and what was fixed since, then the open problems
by code with their counts, on one screen whatever the firm's size.

DynamoDB, SES and Secrets Manager are moto's, with the tables built from template.yaml's own
definitions. The clock is the test's, so "24 hours later" needs no waiting.
"""

from __future__ import annotations

import functools
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models.table import Table as MotoTable
from moto.ses.models import ses_backends
from xpm_sync.adapters import aws
from xpm_sync.adapters.active_table import ActiveRepository
from xpm_sync.adapters.dynamodb import Table
from xpm_sync.adapters.notifier import Notifier, NotifyAllowance, NotifyResult
from xpm_sync.adapters.sync_log import RecordStates
from xpm_sync.domain import entries as codes
from xpm_sync.domain.entries import Entry
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.notification import EMAIL_GROUPS, monitoring_url, render_email
from xpm_sync.domain.problem_summary import ProblemSummary, summarise_problems
from xpm_sync.domain.problems import ClosedProblem, Problem, RecordState, reconcile
from xpm_sync.domain.runs import SyncRun, new_counts
from xpm_sync.observability import metrics

from local.stack import StackNames, create_resources
from tests.fakes import FakeClock
from tests.fixtures.metrics import emf_documents

REGION = "ap-southeast-2"
FROM_EMAIL = "sync@active.example"
FRONTEND_URL = "https://active.example"
FIRM_ID = "firm-7"
USER_ID = "user-boss"
USER_EMAIL = "boss@firm.example"
TOKEN_PREFIX = "xpm-sync/test/firm/"


class RecordingSes:
    """moto's SES client, remembering every send_email call (moto keeps only the HTML body)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.sent: list[dict[str, Any]] = []

    def send_email(self, **kwargs: Any) -> Any:
        answer = self._inner.send_email(**kwargs)
        self.sent.append(kwargs)
        return answer


class BrokenSes:
    """An SES client whose every send fails before reaching SES (network down)."""

    def send_email(self, **kwargs: Any) -> Any:
        raise EndpointConnectionError(endpoint_url=f"https://email.{REGION}.amazonaws.com")


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[StackNames]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        # Builds the notify table (key firm_id, TTL expires_at) from template.yaml and verifies FROM_EMAIL.
        yield create_resources(region=REGION, from_email=FROM_EMAIL)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@functools.cache
def _aws(service: str) -> Any:
    # Building sessions and models is the slow part of these tests, so each client is made once.
    return boto3.session.Session(region_name=REGION).client(service)


def table(name: str) -> Table:
    return Table(_aws("dynamodb"), name)


def ses_client() -> Any:
    return _aws("ses")


def sent_messages() -> list[Any]:
    return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


def record_states(stack: StackNames) -> RecordStates:
    return RecordStates(table(stack.sync_log_table), FIRM_ID)


def make_notifier(
    stack: StackNames,
    clock: FakeClock,
    *,
    ses: Any = None,
    from_email: str = FROM_EMAIL,
    states_for: Callable[[str], RecordStates] | None = None,
    notify_table: Table | None = None,
) -> Notifier:
    """The notifier on the stack's tables; ``states_for`` or ``notify_table`` replace the stack's."""
    return Notifier(
        active_for=lambda firm_id: ActiveRepository(table(stack.active_table), firm_id),
        states_for=(
            states_for
            if states_for is not None
            else lambda firm_id: RecordStates(table(stack.sync_log_table), firm_id)
        ),
        notify_table=notify_table if notify_table is not None else table(stack.notify_table),
        ses_client=ses if ses is not None else ses_client(),
        from_email=from_email,
        frontend_url=FRONTEND_URL,
        clock=clock,
    )


def add_user(stack: StackNames, user_id: str = USER_ID, email: str | None = USER_EMAIL) -> None:
    item = {"pk": f"FIRM#{FIRM_ID}", "sk": f"USER#{user_id}", "firm_id": FIRM_ID, "entity": "user"}
    item |= {"user_id": user_id, "first_name": "Pat", "last_name": "Boss"}
    if email is not None:
        item["email"] = email
    table(stack.active_table).put_item(Item=item)


def config(notification_user_id: str | None = USER_ID, *, last_notified_at: str | None = None) -> FirmConfig:
    return FirmConfig(
        firm_id=FIRM_ID,
        sync_name="XPM sync",
        tenant_name="Smith & Jones <Accountants>",
        notification_user_id=notification_user_id,
        status="connected",
        last_notified_at=last_notified_at,
    )


def make_run(
    status: str = "partial",
    run_id: str = "20260302T090000Z-abcd1234",
    *,
    started_at: str = "2026-03-02T09:00:00Z",
    finished_at: str = "2026-03-02T09:01:10Z",
) -> SyncRun:
    counts = new_counts()
    counts["user"].update(created=2, unchanged=9)
    counts["client"].update(updated=4, unchanged=120, failed=12)
    return SyncRun(
        firm_id=FIRM_ID,
        run_id=run_id,
        trigger="schedule",
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        counts=counts,
        xpm_calls=3,
    )


def partner_errors(count: int) -> list[Entry]:
    return [
        codes.PARTNER_NOT_IN_ACTIVE.entry(
            label=f"Client {n} (C{n:03d})",
            message=f"Partner partner{n}@firm.example is not an Active user.",
            xpm_uuid=f"uuid-{n}",
        )
        for n in range(count)
    ]


def abn_warning() -> Entry:
    return codes.ABN_INVALID.entry(
        label="Acme <b>Pty</b> (ACME)", message="Business Number '123' is not a valid ABN."
    )


def allowance_item(stack: StackNames) -> dict[str, Any] | None:
    item: dict[str, Any] | None = table(stack.notify_table).get_item(Key={"firm_id": FIRM_ID}).get("Item")
    return item


# --- once a day -------------------------------------------------------------------------------


def test_a_partial_run_emails_the_notification_user(stack: StackNames, clock: FakeClock) -> None:
    # Given a firm whose notification user exists in Active
    add_user(stack)

    # When a partial run finishes
    result = make_notifier(stack, clock)(make_run(), [*partner_errors(2), abn_warning()], config())

    # Then one email goes to that user, and the firm's allowance is taken for 24 hours
    assert result == NotifyResult("sent")
    [message] = sent_messages()
    assert message.destinations["ToAddresses"] == [USER_EMAIL]
    assert message.source == FROM_EMAIL
    item = allowance_item(stack)
    assert item is not None
    assert int(item["expires_at"]) == int((clock.now() + timedelta(hours=24)).timestamp())


def test_a_second_failing_run_within_24_hours_sends_nothing(stack: StackNames, clock: FakeClock) -> None:
    add_user(stack)
    notifier = make_notifier(stack, clock)
    assert notifier(make_run(), partner_errors(1), config()).outcome == "sent"

    # When another run fails 23 hours 59 minutes later
    clock.advance(hours=23, minutes=59)
    result = notifier(make_run("failed", run_id="20260303T085900Z-0000ffff"), partner_errors(1), config())

    # Then no second email goes out
    assert result.outcome == "suppressed"
    assert len(sent_messages()) == 1


def test_24_hours_later_a_new_email_goes(stack: StackNames, clock: FakeClock) -> None:
    add_user(stack)
    notifier = make_notifier(stack, clock)
    assert notifier(make_run(), partner_errors(1), config()).outcome == "sent"

    clock.advance(hours=24, seconds=1)
    result = notifier(make_run(run_id="20260303T090001Z-0000ffff"), partner_errors(1), config())

    assert result.outcome == "sent"
    assert len(sent_messages()) == 2


def test_an_expired_item_that_dynamodb_has_not_deleted_yet_allows_a_send(
    stack: StackNames, clock: FakeClock
) -> None:
    # Given an allowance item whose expiry passed a day ago, still in the table (TTL deletes late)
    add_user(stack)
    expired = int((clock.now() - timedelta(days=1)).timestamp())
    table(stack.notify_table).put_item(Item={"firm_id": FIRM_ID, "expires_at": expired, "claim_id": "old"})

    # When a run fails
    result = make_notifier(stack, clock)(make_run("failed"), partner_errors(1), config())

    # Then the email goes out and the item now holds the new claim
    assert result.outcome == "sent"
    assert len(sent_messages()) == 1
    item = allowance_item(stack)
    assert item is not None
    assert item["claim_id"] != "old"


def test_racing_workers_send_one_email(
    stack: StackNames, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DynamoDB applies conditional writes to one item one at a time; moto's in-process backend does
    # not lock, so the test restores that guarantee rather than depend on thread timing.
    write_lock = threading.Lock()
    original: Callable[..., Any] = MotoTable.put_item

    def atomic_put(self: Any, *args: Any, **kwargs: Any) -> Any:
        with write_lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(MotoTable, "put_item", atomic_put)
    add_user(stack)
    workers = 4
    # Each worker has its own session and clients, as separate Lambda invocations would.
    sessions = [boto3.session.Session(region_name=REGION) for _ in range(workers)]

    def notifier_of(session: Any) -> Notifier:
        active = Table(session.client("dynamodb"), stack.active_table)
        return Notifier(
            active_for=lambda firm_id: ActiveRepository(active, firm_id),
            states_for=lambda firm_id: RecordStates(
                Table(session.client("dynamodb"), stack.sync_log_table), firm_id
            ),
            notify_table=Table(session.client("dynamodb"), stack.notify_table),
            ses_client=session.client("ses"),
            from_email=FROM_EMAIL,
            frontend_url=FRONTEND_URL,
            clock=clock,
        )

    notifiers = [notifier_of(session) for session in sessions]
    start = threading.Barrier(workers)
    outcomes: list[str] = []

    def work(notifier: Notifier) -> None:
        start.wait()
        outcomes.append(notifier(make_run(), partner_errors(1), config()).outcome)

    threads = [threading.Thread(target=work, args=(notifier,)) for notifier in notifiers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["sent"] + ["suppressed"] * (workers - 1)
    assert len(sent_messages()) == 1


# --- a failed send uses up nothing ------------------------------------------------------------


def test_a_rejected_send_leaves_the_allowance_free(stack: StackNames, clock: FakeClock) -> None:
    # Given a sender address SES has not verified (SES answers MessageRejected)
    add_user(stack)
    rejected = make_notifier(stack, clock, from_email="unverified@active.example")

    # When a run fails
    result = rejected(make_run("failed"), partner_errors(1), config())

    # Then nothing is sent, nothing raised into the run, and the allowance is free
    assert result.outcome == "send_failed"
    assert sent_messages() == []
    assert allowance_item(stack) is None
    # ...so the next failing run, with SES working, still emails
    assert make_notifier(stack, clock)(make_run("failed"), partner_errors(1), config()).outcome == "sent"
    assert len(sent_messages()) == 1


def test_a_send_that_never_reaches_ses_leaves_the_allowance_free(stack: StackNames, clock: FakeClock) -> None:
    add_user(stack)

    result = make_notifier(stack, clock, ses=BrokenSes())(make_run(), partner_errors(1), config())

    assert result.outcome == "send_failed"
    assert allowance_item(stack) is None


class SilentSes:
    """An SES client that took the request and whose answer never came back."""

    def __init__(self) -> None:
        self.calls = 0

    def send_email(self, **kwargs: Any) -> Any:
        self.calls += 1
        raise ReadTimeoutError(endpoint_url=f"https://email.{REGION}.amazonaws.com")


def test_a_send_whose_answer_never_came_keeps_the_allowance(stack: StackNames, clock: FakeClock) -> None:
    """The probe of 2026-12-07 (evening): SES may have sent it; giving the allowance back let the
    next hour's run send a second email (SPEC A5: one in 24 hours)."""
    add_user(stack)
    silent = SilentSes()

    result = make_notifier(stack, clock, ses=silent)(make_run(), partner_errors(1), config())

    assert result.outcome == "send_failed"
    assert silent.calls == 1
    assert allowance_item(stack) is not None
    assert make_notifier(stack, clock)(make_run(), partner_errors(1), config()).outcome == "suppressed"


def test_operators_see_each_email_due_as_sent_or_not_sent(
    stack: StackNames, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    # The probe of 2026-12-07 (late) left it: SES refusing the sender was a log line per firm,
    # and no metric an alarm could watch (template.yaml's NotificationsFailedAlarm).
    add_user(stack)
    metrics.clear_metrics()
    capsys.readouterr()

    def emitted_by(notifier: Notifier) -> list[dict[str, float]]:
        notifier(make_run("failed"), partner_errors(1), config())
        return [document.values for document in emf_documents(capsys.readouterr().out)]

    # SES refuses the sender: the email is due and does not go
    assert emitted_by(make_notifier(stack, clock, from_email="unverified@active.example")) == [
        {"NotificationsSent": 0, "NotificationsFailed": 1}
    ]
    # With SES working, it goes
    assert emitted_by(make_notifier(stack, clock)) == [{"NotificationsSent": 1, "NotificationsFailed": 0}]
    # The firm's 24 hours hold the next one back: the product working, nothing for operators
    assert emitted_by(make_notifier(stack, clock)) == []


def test_the_ses_client_sends_once_and_never_retries_by_itself() -> None:
    """SendEmail is not idempotent: an SDK retry after a lost answer would be a second email."""
    assert aws.client("ses").meta.config.retries["total_max_attempts"] == 1
    assert aws.client("dynamodb").meta.config.retries["total_max_attempts"] > 1


def test_a_release_never_deletes_a_newer_claim(stack: StackNames, clock: FakeClock) -> None:
    # Given a worker whose claim expired while its send hung, and another worker's newer claim
    allowance = NotifyAllowance(table(stack.notify_table), clock)
    stale = allowance.try_acquire(FIRM_ID)
    assert stale is not None
    clock.advance(hours=25)
    newer = allowance.try_acquire(FIRM_ID)
    assert newer is not None

    # When the first worker gives its claim back
    allowance.release(stale)

    # Then the newer claim still holds the allowance
    assert allowance.try_acquire(FIRM_ID) is None
    item = allowance_item(stack)
    assert item is not None
    assert item["claim_id"] == newer.claim_id


def test_a_notify_table_outage_does_not_break_the_run(stack: StackNames, clock: FakeClock) -> None:
    add_user(stack)
    notifier = make_notifier(stack, clock, notify_table=table("no-such-table"))

    result = notifier(make_run("failed"), partner_errors(1), config())

    assert result.outcome == "error"
    assert sent_messages() == []


# --- the notification user --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notification_user_id", "stored_email", "reason"),
    [
        (None, USER_EMAIL, "No notification user is chosen"),
        ("user-gone", USER_EMAIL, "no longer exists in Active"),
        (USER_ID, None, "has no valid email address"),
        (USER_ID, "not-an-email", "has no valid email address"),
    ],
)
def test_an_unusable_notification_user_is_an_entry_not_a_crash(
    stack: StackNames,
    clock: FakeClock,
    notification_user_id: str | None,
    stored_email: str | None,
    reason: str,
) -> None:
    add_user(stack, email=stored_email)

    result = make_notifier(stack, clock)(make_run("failed"), partner_errors(1), config(notification_user_id))

    # Then the run's log gains a run-level warning with a suggestion, and no email goes out
    assert result.outcome == "no_recipient"
    [entry] = result.entries
    assert (entry.code, entry.severity, entry.entity) == ("NOTIFICATION_USER_INVALID", "warning", "run")
    assert reason in entry.message
    assert "notification user" in entry.suggestion
    assert sent_messages() == []
    # The allowance is untouched: once the admin fixes the user, the next failure is emailed.
    assert allowance_item(stack) is None


def test_whether_the_notification_user_can_be_reached_is_one_read_and_never_raises(
    stack: StackNames, clock: FakeClock
) -> None:
    # What a run with nothing to tell asks while NOTIFICATION_USER_INVALID is open (SPEC B6)
    add_user(stack)
    unreadable = Notifier(
        active_for=lambda firm_id: ActiveRepository(table("no-such-table"), firm_id),
        states_for=lambda firm_id: RecordStates(table(stack.sync_log_table), firm_id),
        notify_table=table(stack.notify_table),
        ses_client=ses_client(),
        from_email=FROM_EMAIL,
        frontend_url=FRONTEND_URL,
        clock=clock,
    )

    assert make_notifier(stack, clock).reaches_recipient(config())
    assert not make_notifier(stack, clock).reaches_recipient(config("user-gone"))
    assert not make_notifier(stack, clock).reaches_recipient(config(None))
    assert not unreadable.reaches_recipient(config())
    assert sent_messages() == []


def test_a_successful_run_sends_nothing(stack: StackNames, clock: FakeClock) -> None:
    add_user(stack)

    assert make_notifier(stack, clock)(make_run("success"), [], config()).outcome == "not_needed"
    assert sent_messages() == []


# --- what the email says (SPEC A5): new, fixed, then the open problems by code ----------------------

RUN_1_STARTED = "2026-03-02T09:00:00Z"
# Run 1 finished and was emailed: the engine stores this moment as the firm's last_notified_at, and
# the problems run 1 closed carry it as their closed_at.
RUN_1_EMAILED = "2026-03-02T09:01:10Z"
RUN_2_STARTED = "2026-03-03T09:05:00Z"
RUN_2_FINISHED = "2026-03-03T09:06:10Z"


def open_problem(
    kind: codes.EntryKind, label: str, *, n: int, first_seen: str, last_seen: str | None = None, runs: int = 1
) -> RecordState:
    """One client's state with one open problem of ``kind``, as the engine keeps it."""
    return RecordState(
        entity="client",
        key=f"client#uuid-{n:05d}",
        label=label,
        xpm_uuid=f"uuid-{n:05d}",
        problems=(
            Problem(
                code=kind.code,
                severity=kind.severity,
                message=f"{label}: {kind.cause}",
                suggestion=kind.suggestion,
                first_seen=first_seen,
                last_seen=last_seen or first_seen,
                runs=runs,
            ),
        ),
    )


def run_problem(kind: codes.EntryKind, *, first_seen: str) -> RecordState:
    return RecordState(
        entity="run",
        key="run",
        label="Sync run",
        problems=(Problem(kind.code, kind.severity, kind.cause, kind.suggestion, first_seen, first_seen, 1),),
    )


def closed(state: RecordState, closed_at: str) -> list[ClosedProblem]:
    """Every problem of ``state``, closed at ``closed_at`` as a run that no longer sees them closes them."""
    _, closing = reconcile(state, None, run_id="the-closing-run", run_started_at=closed_at, now=closed_at)
    return closing


def save(
    stack: StackNames,
    clock: FakeClock,
    *,
    still_open: list[RecordState],
    fixed: list[ClosedProblem] = [],  # noqa: B006 (never mutated)
    gone: list[RecordState] = [],  # noqa: B006
) -> None:
    """What the engine's _save_states writes before it calls the notifier."""
    record_states(stack).write(still_open, [state.key for state in gone], fixed, clock.now())


def email_of(call: dict[str, Any]) -> tuple[str, str, str]:
    message = call["Message"]
    return message["Subject"]["Data"], message["Body"]["Text"]["Data"], message["Body"]["Html"]["Data"]


def section(text: str, heading: str, next_heading: str | None = None) -> str:
    """The text from the heading that starts with ``heading`` up to the next one."""
    start = text.index(heading)
    return text[start : text.index(next_heading, start) if next_heading else None]


def test_the_summary_groups_open_problems_by_code_with_counts_the_fix_and_five_examples() -> None:
    # Given seven clients blocked by missing partners, two invalid ABNs, a run-level failure and
    # one client with two problems
    states = [
        open_problem(codes.PARTNER_NOT_IN_ACTIVE, f"Client {n} (C{n})", n=n, first_seen=RUN_1_STARTED)
        for n in range(7)
    ]
    states += [
        open_problem(codes.ABN_INVALID, f"Abn {n} (A{n})", n=10 + n, first_seen=RUN_1_STARTED)
        for n in range(2)
    ]
    states.append(run_problem(codes.XPM_BAD_RESPONSE, first_seen=RUN_2_STARTED))
    two = open_problem(codes.MANAGER_NOT_IN_ACTIVE, "Twice (TW)", n=20, first_seen=RUN_2_STARTED)
    states.append(
        RecordState(
            entity=two.entity,
            key=two.key,
            label=two.label,
            problems=two.problems + states[7].problems,
            xpm_uuid=two.xpm_uuid,
        )
    )
    fixed = closed(
        open_problem(codes.PARTNER_MISSING, "Fixed (FX)", n=30, first_seen=RUN_1_STARTED), RUN_2_FINISHED
    )

    # When it is summarised for a firm last emailed after run 1
    summary = summarise_problems(states, fixed, last_emailed_at=RUN_1_EMAILED)

    # Then each code is one group with its count, severity, fix and at most five records named:
    # the run-level failure first (it blocks everything), then errors, then the most records
    assert [(g.code, g.severity, g.count) for g in summary.groups] == [
        ("XPM_BAD_RESPONSE", "error", 1),
        ("PARTNER_NOT_IN_ACTIVE", "error", 7),
        ("ABN_INVALID", "warning", 3),
        ("MANAGER_NOT_IN_ACTIVE", "warning", 1),
    ]
    partner = summary.groups[1]
    assert partner.suggestion == codes.PARTNER_NOT_IN_ACTIVE.suggestion
    assert partner.examples == tuple(f"Client {n} (C{n})" for n in range(5))
    assert summary.open == 12
    # ...what is new is what was first seen after the last email (run 2's), and the fixed are counted
    assert [(g.code, g.count) for g in summary.new] == [("XPM_BAD_RESPONSE", 1), ("MANAGER_NOT_IN_ACTIVE", 1)]
    assert summary.new_since_last_email == 2
    assert summary.fixed_since_last_email == 1
    assert [(g.code, g.count, g.examples) for g in summary.fixed] == [("PARTNER_MISSING", 1, ("Fixed (FX)",))]


def test_a_problem_fixed_several_times_is_one_fix_and_none_while_it_is_open_again() -> None:
    """The probe of 2026-12-07 (evening): each closing counted as a fix, and a problem broken again
    still counted: "Fixed since then: 3 problems" for one record that is open now."""
    flapping = open_problem(codes.BUSINESS_STRUCTURE_MISSING, "Flapping (FL)", n=1, first_seen=RUN_1_STARTED)
    settled = open_problem(codes.PARTNER_MISSING, "Settled (ST)", n=2, first_seen=RUN_1_STARTED)
    fixed = [
        *closed(flapping, RUN_1_EMAILED),
        *closed(flapping, RUN_2_STARTED),
        *closed(settled, RUN_1_EMAILED),
        *closed(settled, RUN_2_FINISHED),
    ]

    summary = summarise_problems([flapping], fixed, last_emailed_at=RUN_1_STARTED)

    assert summary.open == 1
    assert summary.fixed_since_last_email == 1
    assert [(g.code, g.count, g.examples) for g in summary.fixed] == [
        ("PARTNER_MISSING", 1, ("Settled (ST)",))
    ]


def test_a_hidden_problem_open_again_is_still_no_fix() -> None:
    """A review of 2026-12-07 (evening): the email hid the notification user's problem it reached,
    and so counted its earlier closing as a fix while it was open again."""
    reached = run_problem(codes.NOTIFICATION_USER_INVALID, first_seen=RUN_1_STARTED)

    summary = summarise_problems(
        [reached],
        closed(reached, RUN_2_STARTED),
        last_emailed_at=RUN_1_STARTED,
        hidden={codes.NOTIFICATION_USER_INVALID.code},
    )

    assert (summary.open, summary.fixed_since_last_email) == (0, 0)


def test_the_email_leads_with_what_is_new_and_what_was_fixed_then_the_open_problems_by_code(
    stack: StackNames, clock: FakeClock
) -> None:
    # Given a firm last emailed after run 1, three clients blocked by a missing partner since then,
    # and run 2 that found two more clients blocked and an invalid ABN, and fixed two managers
    add_user(stack)
    clock.moment = datetime(2026, 3, 3, 9, 6, 10, tzinfo=UTC)
    old = [
        open_problem(
            codes.PARTNER_NOT_IN_ACTIVE,
            f"Old Client {n} (OLD{n})",
            n=n,
            first_seen=RUN_1_STARTED,
            last_seen=RUN_2_STARTED,
            runs=2,
        )
        for n in range(3)
    ]
    new = [
        open_problem(codes.PARTNER_NOT_IN_ACTIVE, f"New Client {n} (NEW{n})", n=n, first_seen=RUN_2_STARTED)
        for n in (3, 4)
    ]
    new.append(open_problem(codes.ABN_INVALID, "Acme Pty (ACME)", n=5, first_seen=RUN_2_STARTED))
    managers = [
        open_problem(codes.MANAGER_NOT_IN_ACTIVE, f"Fixed Client {n} (FIX{n})", n=n, first_seen=RUN_1_STARTED)
        for n in (6, 7)
    ]
    fixed_long_ago = open_problem(
        codes.CLIENT_CODE_DUPLICATE, "Long Ago (LA)", n=8, first_seen="2026-02-01T09:00:00Z"
    )
    save(
        stack,
        clock,
        still_open=old + new,
        fixed=[
            *closed(managers[0], RUN_2_FINISHED),
            *closed(managers[1], RUN_2_FINISHED),
            *closed(fixed_long_ago, "2026-03-01T09:00:00Z"),
        ],
    )
    ses = RecordingSes(ses_client())
    run_2 = make_run(run_id="20260303T090500Z-0000ffff", started_at=RUN_2_STARTED, finished_at=RUN_2_FINISHED)

    # When run 2 (partial) emails the notification user
    result = make_notifier(stack, clock, ses=ses)(run_2, [], config(last_notified_at=RUN_1_EMAILED))

    # Then the email opens with what is new since the last email, then what was fixed since then,
    # then every open problem grouped by code with its count and fix
    assert result.outcome == "sent"
    [call] = ses.sent
    subject, text, html = email_of(call)
    headings = ["New since the last email (2 Mar 2026 09:01 UTC): 3 problems", "Fixed since then: 2 problems"]
    headings.append("Open problems now: 6, by cause")
    assert [text.index(heading) for heading in headings] == sorted(
        text.index(heading) for heading in headings
    )
    assert [html.index(heading) for heading in headings] == sorted(
        html.index(heading) for heading in headings
    )
    assert text.index(headings[0]) < text.index("This run: partial")
    new_part = section(text, headings[0], headings[1])
    assert "- [error] PARTNER_NOT_IN_ACTIVE (2): New Client 3 (NEW3), New Client 4 (NEW4)" in new_part
    assert "- [warning] ABN_INVALID (1): Acme Pty (ACME)" in new_part
    assert "Old Client" not in new_part
    fixed_part = section(text, headings[1], headings[2])
    assert "- MANAGER_NOT_IN_ACTIVE (2): Fixed Client 6 (FIX6), Fixed Client 7 (FIX7)" in fixed_part
    assert "CLIENT_CODE_DUPLICATE" not in text  # fixed before the last email: told then
    open_part = section(text, headings[2], "This run:")
    assert "1. [error] PARTNER_NOT_IN_ACTIVE (5): Old Client 0 (OLD0), Old Client 1 (OLD1), " in open_part
    assert f"   How to fix: {codes.PARTNER_NOT_IN_ACTIVE.suggestion}" in open_part
    assert "2. [warning] ABN_INVALID (1): Acme Pty (ACME)" in open_part
    assert subject == "XPM sync for Smith & Jones <Accountants>: 6 open problems, 3 new"


def test_a_second_email_the_next_day_counts_only_what_is_new_since_the_first(
    stack: StackNames, clock: FakeClock
) -> None:
    # Given run 1 found clients A and B wrong and, as it finished, closed X's problem
    add_user(stack)
    ses = RecordingSes(ses_client())
    notifier = make_notifier(stack, clock, ses=ses)
    a = open_problem(codes.PARTNER_NOT_IN_ACTIVE, "Client A (CA)", n=1, first_seen=RUN_1_STARTED)
    b = open_problem(codes.ABN_INVALID, "Client B (CB)", n=2, first_seen=RUN_1_STARTED)
    x = open_problem(codes.CLIENT_CODE_DUPLICATE, "Client X (CX)", n=3, first_seen="2026-03-01T09:00:00Z")
    save(stack, clock, still_open=[a, b], fixed=closed(x, RUN_1_EMAILED), gone=[x])
    # ...and emailed (the engine then keeps the moment as last_notified_at)
    assert notifier(make_run(), [], config()).outcome == "sent"

    # When, the next day, run 2 fixes A, still finds B and finds C, and emails again
    clock.advance(hours=24, minutes=5)
    b_again = open_problem(
        codes.ABN_INVALID, "Client B (CB)", n=2, first_seen=RUN_1_STARTED, last_seen=RUN_2_STARTED, runs=2
    )
    c = open_problem(codes.CLIENT_NAME_MISSING, "Client C (CC)", n=4, first_seen=RUN_2_STARTED)
    save(stack, clock, still_open=[b_again, c], fixed=closed(a, RUN_2_FINISHED), gone=[a])
    run_2 = make_run(run_id="20260303T090500Z-0000ffff", started_at=RUN_2_STARTED, finished_at=RUN_2_FINISHED)
    assert notifier(run_2, [], config(last_notified_at=RUN_1_EMAILED)).outcome == "sent"

    # Then the first email told all of run 1's problems as new, and X as fixed
    [first, second] = [email_of(call)[1] for call in ses.sent]
    assert "New: 2 problems" in first
    assert "Fixed in the last 90 days: 1 problem\n- CLIENT_CODE_DUPLICATE (1): Client X (CX)" in first
    # ...and the second tells only C as new, only A as fixed (X was told already), B still open
    new_part = section(second, "New since the last email", "Fixed since then")
    assert "New since the last email (2 Mar 2026 09:01 UTC): 1 problem\n" in new_part
    assert "Client C (CC)" in new_part
    assert "Client B" not in new_part
    assert "Fixed since then: 1 problem\n- PARTNER_NOT_IN_ACTIVE (1): Client A (CA)" in second
    assert "Client X" not in second
    open_part = section(second, "Open problems now: 2, by cause")
    assert "Client B (CB)" in open_part
    assert "Client C (CC)" in open_part


def test_a_thousand_open_problems_make_an_email_of_one_screen(stack: StackNames, clock: FakeClock) -> None:
    # Given 1,000 clients blocked by missing partners (the first with a 200-character name), seven
    # other causes, and 200 problems fixed, for a firm never emailed
    add_user(stack)
    long_name = "Very Long Trading Name " * 9
    blocked = [
        open_problem(
            codes.PARTNER_NOT_IN_ACTIVE,
            codes.shorten(long_name, codes.MAX_LABEL_CHARS) if n == 0 else f"Client {n} (C{n:05d})",
            n=n,
            first_seen=RUN_1_STARTED,
        )
        for n in range(1000)
    ]
    others = [
        codes.ABN_INVALID,
        codes.MANAGER_NOT_IN_ACTIVE,
        codes.PARTNER_MISSING,
        codes.CLIENT_NAME_MISSING,
        codes.CLIENT_CODE_MISSING,
        codes.BUSINESS_STRUCTURE_UNKNOWN,
        codes.INDIVIDUAL_NAME_MISSING,
    ]
    causes = [
        open_problem(kind, f"Other {n} (O{n})", n=5000 + n, first_seen=RUN_1_STARTED)
        for n, kind in enumerate(others)
    ]
    fixed = [
        problem
        for n in range(200)
        for problem in closed(
            open_problem(codes.PARTNER_MISSING, f"Fixed {n} (F{n})", n=8000 + n, first_seen=RUN_1_STARTED),
            RUN_1_EMAILED,
        )
    ]
    save(stack, clock, still_open=blocked + causes, fixed=fixed)
    ses = RecordingSes(ses_client())

    # When a run emails
    assert make_notifier(stack, clock, ses=ses)(make_run(), [], config()).outcome == "sent"

    # Then the email names a few records per cause and says how many more, shows five causes and
    # says how many more: a screen, not a register
    _, text, html = email_of(ses.sent[0])
    assert "Open problems now: 1007, by cause" in text
    assert "1. [error] PARTNER_NOT_IN_ACTIVE (1000): " in text
    assert "and 997 more" in section(text, "New: 1007 problems", "Fixed")
    assert "and 997 more" in section(text, "Open problems now")
    assert "... and 3 more causes (3 problems) in Sync Monitoring." in section(text, "Open problems now")
    assert "- PARTNER_MISSING (200): Fixed 0 (F0), Fixed 1 (F1), Fixed 2 (F2) and 197 more" in text
    assert len([line for line in section(text, "Open problems now").splitlines() if line[:1].isdigit()]) == (
        EMAIL_GROUPS
    )
    # ...with long names cut short
    assert long_name.strip() not in text
    assert (
        "Very Long Trading Name Very Long Trading Name Very Long Trading Name Very Long …, Client 1" in text
    )
    assert len(text.splitlines()) <= 40
    assert len(text) < 3_000
    assert len(html) < 4_000
    assert "Client 100 " not in text


def test_the_email_has_text_html_the_run_and_the_link_to_sync_monitoring(
    stack: StackNames, clock: FakeClock
) -> None:
    # Given a partial run with a run-level error
    add_user(stack)
    save(stack, clock, still_open=[run_problem(codes.XPM_RATE_LIMITED, first_seen=RUN_1_STARTED)])
    run_level = codes.XPM_RATE_LIMITED.entry(label="Sync run", message="XPM's rate limit was reached.")
    ses = RecordingSes(ses_client())

    make_notifier(stack, clock, ses=ses)(
        make_run(), [abn_warning(), *partner_errors(12), run_level], config()
    )

    # Then both bodies say what went wrong, the run's counts and link to the run in Sync Monitoring
    [call] = ses.sent
    subject, text, html = email_of(call)
    link = f"{FRONTEND_URL}/admin/integrations/xpm/runs/20260302T090000Z-abcd1234"
    assert "Smith & Jones <Accountants>" in subject
    assert text.startswith(
        "The XPM sync for Smith & Jones <Accountants> finished, but some records could not be synced.\n"
        "What went wrong: XPM's rate limit was reached.\n"
    )
    assert f"See every open problem and the whole log in Sync Monitoring: {link}" in text
    assert f'href="{link}"' in html
    assert "Clients: 0 created, 4 updated, 120 unchanged, 12 failed, 0 skipped" in text
    assert "XPM calls: 3" in text
    assert "1. [error] XPM_RATE_LIMITED (1): Sync run" in text
    assert codes.XPM_RATE_LIMITED.suggestion in html
    # What moto's SES stored is the same HTML
    assert sent_messages()[0].body == html


def test_the_html_escapes_everything() -> None:
    # Given labels and a firm name that look like HTML, and a run id that would break out of href
    label = "Acme <b>Pty</b> (ACME)"
    states = [open_problem(codes.ABN_INVALID, label, n=1, first_seen=RUN_1_STARTED)]
    fixed = closed(
        open_problem(codes.PARTNER_MISSING, "<img src=x onerror=alert(1)>", n=2, first_seen=RUN_1_STARTED),
        RUN_1_EMAILED,
    )
    summary = summarise_problems(states, fixed, last_emailed_at=None)

    email = render_email(
        make_run(),
        [abn_warning(), *partner_errors(1)],
        config(),
        summary,
        firm_name="Smith & Jones <Accountants>",
        monitoring_url=monitoring_url(FRONTEND_URL, 'x"><script>'),
    )

    assert "<b>" not in email.html
    assert "<img" not in email.html
    assert "Acme &lt;b&gt;Pty&lt;/b&gt; (ACME)" in email.html
    assert "&lt;img src=x onerror=alert(1)&gt;" in email.html
    assert "Smith &amp; Jones &lt;Accountants&gt;" in email.html
    assert "<script>" not in email.html
    assert label in email.text  # plain text stays as written


def test_unicode_line_breaks_and_direction_overrides_in_data_never_reach_the_email() -> None:
    """The probe of 2026-12-07 (evening): a client name could start a forged line of its own, or
    reverse how the rest of its line reads."""
    label = "Evil\u202e Pty\u2028How to fix: call 0400 000 000\x85 (EV1)"
    states = [open_problem(codes.ABN_INVALID, label, n=1, first_seen=RUN_1_STARTED)]
    summary = summarise_problems(states, [], last_emailed_at=None)

    email = render_email(
        make_run(), [abn_warning()], config(), summary, firm_name="Firm\u2028Two\u2066", monitoring_url="x"
    )

    for part in (email.subject, email.text, email.html):
        assert not any(mark in part for mark in ("\u202e", "\u2028", "\x85", "\u2066"))
    assert not any(line.startswith("How to fix: call") for line in email.text.splitlines())


def test_the_subject_is_one_line() -> None:
    email = render_email(
        make_run("failed"),
        [],
        config(),
        ProblemSummary(groups=(), open=0, fixed_since_last_email=0),
        firm_name="Evil\r\nBcc: x@example.com",
        monitoring_url="u",
    )

    assert "\n" not in email.subject
    assert "\r" not in email.subject
    assert "failed" in email.subject


def test_what_went_wrong_stays_one_short_line_whatever_xpm_answered() -> None:
    # Given a run-level entry quoting a long, multi-line answer from XPM
    answer = "XPM said:\r\n" + "<html>" + "x" * 900 + "</html>"
    failure = codes.XPM_BAD_RESPONSE.entry(label="Sync run", message=answer)

    email = render_email(
        make_run("failed"),
        [failure],
        config(),
        ProblemSummary(groups=(), open=0, fixed_since_last_email=0),
        firm_name="Firm",
        monitoring_url="u",
    )

    # Then the email says it on one line of readable length, after the headline
    [cause] = [line for line in email.text.splitlines() if line.startswith("What went wrong:")]
    assert cause.startswith("What went wrong: XPM said: <html>xxx")
    assert len(cause) < 350
    assert email.text.splitlines()[1] == cause


def test_the_email_never_carries_the_firms_tokens(stack: StackNames, clock: FakeClock) -> None:
    # Given the firm's tokens in Secrets Manager (the access token is a JWT, as Xero's are)
    secrets_client = _aws("secretsmanager")
    access_token = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(48) + "." + secrets.token_urlsafe(64)
    secrets_client.create_secret(
        Name=f"{TOKEN_PREFIX}{FIRM_ID}",
        SecretString=json.dumps(
            {"access_token": access_token, "refresh_token": secrets.token_hex(32), "expires_at": 1772443800}
        ),
    )
    stored = json.loads(secrets_client.get_secret_value(SecretId=f"{TOKEN_PREFIX}{FIRM_ID}")["SecretString"])
    # ...entry messages that quote an authorization header and a bare JWT
    leaky = [
        codes.XPM_BAD_RESPONSE.entry(
            label="Sync run",
            message=f"XPM rejected the request (Authorization: Bearer {stored['access_token']}).",
        ),
        codes.XPM_UNAVAILABLE.entry(label="Sync run", message=f"token {stored['access_token']} refused"),
    ]
    # ...and an open and a fixed problem whose record names quote them too
    quoting = open_problem(
        codes.ABN_INVALID, f"Bearer {stored['access_token']}", n=1, first_seen=RUN_1_STARTED
    )
    fixed = open_problem(
        codes.PARTNER_MISSING, f"was {stored['access_token']}", n=2, first_seen=RUN_1_STARTED
    )
    save(stack, clock, still_open=[quoting], fixed=closed(fixed, RUN_1_EMAILED))
    add_user(stack)
    ses = RecordingSes(ses_client())

    make_notifier(stack, clock, ses=ses)(make_run("failed"), leaky, config())

    [call] = ses.sent
    mail = json.dumps(call) + sent_messages()[0].body + sent_messages()[0].subject
    for key in ("access_token", "refresh_token"):
        assert stored[key] not in mail
    _, text, html = email_of(call)
    assert text.count("[redacted]") == 4
    assert html.count("[redacted]") == 4


def test_an_email_that_cannot_be_written_uses_up_nothing(stack: StackNames, clock: FakeClock) -> None:
    # Given open problems that cannot be read (the sync log table is missing)
    add_user(stack)
    notifier = make_notifier(
        stack, clock, states_for=lambda firm_id: RecordStates(table("no-such-table"), firm_id)
    )

    # When a run fails
    result = notifier(make_run("failed"), partner_errors(1), config())

    # Then nothing is sent, nothing raised into the run, and the firm's allowance is still free
    assert result.outcome == "error"
    assert sent_messages() == []
    assert allowance_item(stack) is None


def test_a_firm_emailed_today_costs_no_read_of_its_open_problems(stack: StackNames, clock: FakeClock) -> None:
    # Given a firm emailed an hour ago
    add_user(stack)
    reads: list[str] = []

    def states_for(firm_id: str) -> RecordStates:
        reads.append(firm_id)
        return record_states(stack)

    notifier = make_notifier(stack, clock, states_for=states_for)
    assert notifier(make_run(), partner_errors(1), config()).outcome == "sent"
    clock.advance(hours=1)

    # When the next run is partial too
    result = notifier(make_run(run_id="20260302T100000Z-0000ffff"), partner_errors(1), config())

    # Then it is suppressed before any open problem is read
    assert result.outcome == "suppressed"
    assert reads == [FIRM_ID]
