"""The failure email (SPEC A5, B3): at most one per firm per 24 hours, a failed send uses up nothing.

DynamoDB, SES and Secrets Manager are moto's, with the tables built from template.yaml's own
definitions. The clock is the test's, so "24 hours later" needs no waiting.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models.table import Table as MotoTable
from moto.ses.models import ses_backends
from xpm_sync.adapters.active_table import ActiveRepository
from xpm_sync.adapters.dynamodb import Table
from xpm_sync.adapters.notifier import Notifier, NotifyAllowance, NotifyResult
from xpm_sync.domain import entries as codes
from xpm_sync.domain.entries import Entry
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.notification import TOP_ENTRIES, monitoring_url, render_email
from xpm_sync.domain.runs import SyncRun, new_counts

from local.stack import StackNames, create_resources

REGION = "ap-southeast-2"
FROM_EMAIL = "sync@active.example"
FRONTEND_URL = "https://active.example"
FIRM_ID = "firm-7"
USER_ID = "user-boss"
USER_EMAIL = "boss@firm.example"
TOKEN_PREFIX = "xpm-sync/test/firm/"


class FakeClock:
    def __init__(self) -> None:
        self.moment = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, delta: timedelta) -> None:
        self.moment += delta


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


def make_notifier(
    stack: StackNames, clock: FakeClock, *, ses: Any = None, from_email: str = FROM_EMAIL
) -> Notifier:
    return Notifier(
        active_for=lambda firm_id: ActiveRepository(table(stack.active_table), firm_id),
        notify_table=table(stack.notify_table),
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


def config(notification_user_id: str | None = USER_ID) -> FirmConfig:
    return FirmConfig(
        firm_id=FIRM_ID,
        sync_name="XPM sync",
        tenant_name="Smith & Jones <Accountants>",
        notification_user_id=notification_user_id,
        status="connected",
    )


def make_run(status: str = "partial", run_id: str = "20260302T090000Z-abcd1234") -> SyncRun:
    counts = new_counts()
    counts["user"].update(created=2, unchanged=9)
    counts["client"].update(updated=4, unchanged=120, failed=12)
    return SyncRun(
        firm_id=FIRM_ID,
        run_id=run_id,
        trigger="schedule",
        status=status,
        started_at="2026-03-02T09:00:00Z",
        finished_at="2026-03-02T09:01:10Z",
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
    clock.advance(timedelta(hours=23, minutes=59))
    result = notifier(make_run("failed", run_id="20260303T085900Z-0000ffff"), partner_errors(1), config())

    # Then no second email goes out
    assert result.outcome == "suppressed"
    assert len(sent_messages()) == 1


def test_24_hours_later_a_new_email_goes(stack: StackNames, clock: FakeClock) -> None:
    add_user(stack)
    notifier = make_notifier(stack, clock)
    assert notifier(make_run(), partner_errors(1), config()).outcome == "sent"

    clock.advance(timedelta(hours=24, seconds=1))
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


def test_a_release_never_deletes_a_newer_claim(stack: StackNames, clock: FakeClock) -> None:
    # Given a worker whose claim expired while its send hung, and another worker's newer claim
    allowance = NotifyAllowance(table(stack.notify_table), clock)
    stale = allowance.try_acquire(FIRM_ID)
    assert stale is not None
    clock.advance(timedelta(hours=25))
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
    notifier = Notifier(
        active_for=lambda firm_id: ActiveRepository(table(stack.active_table), firm_id),
        notify_table=table("no-such-table"),
        ses_client=ses_client(),
        from_email=FROM_EMAIL,
        frontend_url=FRONTEND_URL,
        clock=clock,
    )

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


def test_a_successful_run_sends_nothing(stack: StackNames, clock: FakeClock) -> None:
    add_user(stack)

    assert make_notifier(stack, clock)(make_run("success"), [], config()).outcome == "not_needed"
    assert sent_messages() == []


# --- what the email says ----------------------------------------------------------------------


def test_the_email_has_text_html_the_run_link_and_the_top_entries(
    stack: StackNames, clock: FakeClock
) -> None:
    # Given a run with one run-level error, twelve record errors and a warning (listed first)
    add_user(stack)
    run_level = codes.XPM_RATE_LIMITED.entry(label="Sync run", message="XPM's rate limit was reached.")
    entries = [abn_warning(), *partner_errors(12), run_level]
    ses = RecordingSes(ses_client())

    make_notifier(stack, clock, ses=ses)(make_run(), entries, config())

    [call] = ses.sent
    text = call["Message"]["Body"]["Text"]["Data"]
    html = call["Message"]["Body"]["Html"]["Data"]
    subject = call["Message"]["Subject"]["Data"]
    link = f"{FRONTEND_URL}/admin/integrations/xpm/runs/20260302T090000Z-abcd1234"
    assert "Smith & Jones <Accountants>" in subject
    assert link in text
    assert f'href="{link}"' in html
    # Counts per entity and outcome
    assert "Clients: 0 created, 4 updated, 120 unchanged, 12 failed, 0 skipped" in text
    assert "XPM calls: 3" in text
    # The run-level entry first, then errors; ten in all, so the warning is left for Sync Monitoring
    listed = [line for line in text.splitlines() if re.match(r"\d+\. ", line)]
    assert len(listed) == TOP_ENTRIES
    assert "XPM_RATE_LIMITED" in listed[0]
    assert all("PARTNER_NOT_IN_ACTIVE" in line for line in listed[1:])
    assert "ABN_INVALID" not in text
    assert "the first 10 of 14" in text
    assert text.count(f"How to fix: {codes.PARTNER_NOT_IN_ACTIVE.suggestion}") == TOP_ENTRIES - 1
    assert codes.XPM_RATE_LIMITED.suggestion in html
    assert "What went wrong: XPM's rate limit was reached." in text
    # What moto's SES stored is the same HTML
    assert sent_messages()[0].body == html


def test_the_html_escapes_everything() -> None:
    email = render_email(
        make_run(),
        [abn_warning(), *partner_errors(1)],
        config(),
        firm_name="Smith & Jones <Accountants>",
        monitoring_url=monitoring_url(FRONTEND_URL, 'x"><script>'),
    )

    assert "<b>" not in email.html
    assert "Acme &lt;b&gt;Pty&lt;/b&gt; (ACME)" in email.html
    assert "Smith &amp; Jones &lt;Accountants&gt;" in email.html
    assert "<script>" not in email.html
    assert "Acme <b>Pty</b> (ACME)" in email.text  # plain text stays as written


def test_the_subject_is_one_line() -> None:
    email = render_email(
        make_run("failed"), [], config(), firm_name="Evil\r\nBcc: x@example.com", monitoring_url="u"
    )

    assert "\n" not in email.subject
    assert "\r" not in email.subject
    assert "failed" in email.subject


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
    # ...and entry messages that quote an authorization header and a bare JWT
    leaky = [
        codes.XPM_BAD_RESPONSE.entry(
            label="Sync run",
            message=f"XPM rejected the request (Authorization: Bearer {stored['access_token']}).",
        ),
        codes.XPM_UNAVAILABLE.entry(label="Sync run", message=f"token {stored['access_token']} refused"),
    ]
    add_user(stack)
    ses = RecordingSes(ses_client())

    make_notifier(stack, clock, ses=ses)(make_run("failed"), leaky, config())

    [call] = ses.sent
    mail = json.dumps(call) + sent_messages()[0].body + sent_messages()[0].subject
    for key in ("access_token", "refresh_token"):
        assert stored[key] not in mail
    assert "[redacted]" in call["Message"]["Body"]["Text"]["Data"]
