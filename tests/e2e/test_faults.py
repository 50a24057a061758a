"""Faults survived, bad input refused, nothing lost, nothing leaked.

Every fault is injected on the real path (scheduled event -> dispatcher -> SQS FIFO -> worker
handler, moto in process, the Xero + XPM simulator over HTTP) and every test ends with the same
check, :func:`assert_invariants`:

- no duplicate Active record: no two clients with one ``xpm_uuid`` or one code, no two users with
  one ``xpm_uuid`` or one email;
- no Active-owned attribute lost: ``role``/``office_code``/``modules`` of the seeded users,
  ``notes``/``office_code`` of the client entered by hand during the trial;
- no synced record lost: every Active user and client that existed before is still there, still
  linked to the same XPM record;
- no token in any log line (the Powertools JSON handler, ``caplog``, stdout/stderr), entry, run,
  Active item, worker response or notification email, compared against every access and refresh
  token the simulator issued and every value the firm's secret held;
- the run recorded, finished, with the expected status and run-level entry codes.

Retries and backoff sleep through an injected no-op, so the whole module runs in seconds.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import moto.core.utils as moto_core_utils
import moto.sqs.models as moto_sqs
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.ses.models import ses_backends
from xpm_sync import composition
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.tokens import TokenStore
from xpm_sync.adapters.xero_identity import XeroIdentity
from xpm_sync.adapters.xpm.budget import CallBudget, reset_budgets
from xpm_sync.adapters.xpm.client import XpmApi
from xpm_sync.adapters.xpm.errors import XpmUnavailable
from xpm_sync.composition import worker as worker_composition
from xpm_sync.domain.clock import SystemClock
from xpm_sync.domain.mapping import normalise_email
from xpm_sync.domain.runs import SyncRun
from xpm_sync.observability import logger
from xpm_sync.settings import WorkerSettings, load_settings
from xpm_sync.sync.clients import ClientSync
from xpm_sync.sync.users import UserSync

from functions.api.app import lambda_handler as api_handler
from functions.sync_dispatch.app import lambda_handler as dispatch_handler
from functions.sync_worker.app import lambda_handler as worker_handler
from local.lambda_runtime import Delivery, LocalContext, drain_queue, scheduled_event
from local.seed import TRIAL_NOTE
from local.xpm_sim import generate_practice
from tests.fixtures.concurrency import race
from tests.fixtures.events import load_event
from tests.fixtures.logs import powertools_json_log
from tests.fixtures.simulator import SIM_CLIENT_ID
from tests.fixtures.sync import APP_CLIENT_ID, ScaledInvocations, SyncWorld

P = ParamSpec("P")
T = TypeVar("T")

pytestmark = pytest.mark.e2e

OWNED_USER_ATTRIBUTES = ("role", "office_code", "modules")
OWNED_CLIENT_ATTRIBUTES = ("notes", "office_code")
REGION = "ap-southeast-2"
ACCOUNT_ID = "123456789012"  # moto's default account

# What this module did, for docs/reliability.md: faults planned (by kind), invariant checks and runs
# checked. Written to $RELIABILITY_REPORT_DIR/faults.json when that variable is set (see below).
FAULT_LEDGER: Counter[str] = Counter()
CHECKS: Counter[str] = Counter()


@dataclass(frozen=True)
class StaticToken:
    token: str = field(repr=False)

    def access_token(self, *, force_refresh: bool = False, refused: str | None = None) -> str:
        return self.token


# --- the harness ---------------------------------------------------------------------------------


class Killed(BaseException):
    """The Lambda runtime stopping the worker (timeout, out of memory): no ``except Exception``
    and no ``finally`` that writes anything can be relied upon, so it is not an ``Exception``."""


@dataclass
class FaultWorld:
    """The seeded ``world`` plus what the invariants read: logs, worker answers, delivered records."""

    world: SyncWorld
    json_log: io.StringIO
    caplog: pytest.LogCaptureFixture
    capsys: pytest.CaptureFixture[str]
    # Keyword arguments every XpmApi the worker builds gets (sleep, timeout, max_attempts).
    xpm_options: dict[str, Any]
    sleeps: list[float] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    kills: int = 0

    @property
    def sim(self) -> Any:
        return self.world.sim

    @property
    def sqs(self) -> Any:
        return aws_clients.client("sqs")

    def fault(self, kind: str, *, times: int | None = 1, path: str | None = None, **params: Any) -> None:
        FAULT_LEDGER[kind] += 1
        self.sim.faults.add(kind, times=times, path=path, **params)

    def worker(self, event: dict[str, Any], context: Any) -> Any:
        self.records.extend(event["Records"])
        try:
            response = worker_handler(event, context)
        except Killed:
            # Lambda reports a killed invocation as failed: every record of the batch stays queued.
            self.kills += 1
            return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}
        self.responses.append(response)
        return response

    def run_hourly(self) -> list[Delivery]:
        self.responses.append(dispatch_handler(scheduled_event(), LocalContext("SyncDispatchFunction")))
        return self.drain()

    def drain(self) -> list[Delivery]:
        return drain_queue(self.sqs, self.world.names.queue_url, self.worker)

    def redeliver_failed(self) -> list[Delivery]:
        """The visibility timeout of the records the worker failed runs out: SQS delivers them again."""
        for record in self.records:
            try:
                self.sqs.change_message_visibility(
                    QueueUrl=self.world.names.queue_url,
                    ReceiptHandle=record["receiptHandle"],
                    VisibilityTimeout=0,
                )
            except ClientError:
                continue  # deleted after success: nothing to deliver again
        return self.drain()

    def secret(self) -> dict[str, Any]:
        answer = aws_clients.client("secretsmanager").get_secret_value(
            SecretId=f"{self.world.names.token_secret_prefix}{self.world.firm_id}"
        )
        data = json.loads(answer["SecretString"])
        assert isinstance(data, dict)
        return data

    def token_store(self) -> TokenStore:
        settings = load_settings(WorkerSettings)
        return composition.token_store(settings, SystemClock())


@dataclass(frozen=True)
class Before:
    users: dict[str, dict[str, Any]]
    clients: dict[str, dict[str, Any]]
    run_ids: frozenset[str]
    secret_values: frozenset[str]


def snapshot(fw: FaultWorld) -> Before:
    secret = fw.secret()
    return Before(
        users={str(u["user_id"]): u for u in fw.world.items("user")},
        clients={str(c["client_id"]): c for c in fw.world.items("client")},
        run_ids=frozenset(run.run_id for run in fw.world.runs()),
        secret_values=frozenset({str(secret["access_token"]), str(secret["refresh_token"])}),
    )


def issued_tokens(fw: FaultWorld, before: Before) -> set[str]:
    """Every access and refresh token the simulator ever issued, and everything the secret held."""
    identity = fw.sim.identity
    with identity._lock:  # the simulator is ours: its token books are the ground truth
        issued = set(identity._access) | set(identity._refresh)
    secret = fw.secret()
    return issued | set(before.secret_values) | {str(secret["access_token"]), str(secret["refresh_token"])}


def sent_emails() -> list[str]:
    backend = ses_backends[ACCOUNT_ID][REGION]
    return [json.dumps([m.subject, m.body, m.destinations], default=str) for m in backend.sent_messages]


def everything_written(fw: FaultWorld) -> dict[str, str]:
    """Each place a token must never reach, as text."""
    world = fw.world
    out, err = fw.capsys.readouterr()
    runs = world.runs()
    return {
        "powertools log": fw.json_log.getvalue(),
        "caplog": fw.caplog.text + "\n".join(repr(r.__dict__) for r in fw.caplog.records),
        "stdout/stderr": out + err,
        "entries": "\n".join(e.model_dump_json() for run in runs for e in world.entries(run)),
        "runs": "\n".join(run.model_dump_json() for run in runs),
        "config": repr(world.config()),
        "active items": repr(world.items("user") + world.items("client")),
        "worker responses": repr(fw.responses),
        "emails": "\n".join(sent_emails()),
    }


# --- the invariants ------------------------------------------------------------------------------


def assert_no_duplicates(world: SyncWorld) -> None:
    clients = world.items("client")
    by_uuid = Counter(c["xpm_uuid"] for c in clients if c.get("xpm_uuid"))
    by_code = Counter(str(c["code"]).strip().casefold() for c in clients if c.get("code"))
    assert [u for u, n in by_uuid.items() if n > 1] == [], "two Active clients for one XPM client"
    assert [c for c, n in by_code.items() if n > 1] == [], "two Active clients with one code"
    users = world.items("user")
    by_staff = Counter(u["xpm_uuid"] for u in users if u.get("xpm_uuid"))
    by_email = Counter(normalise_email(str(u["email"])) for u in users if u.get("email"))
    assert [u for u, n in by_staff.items() if n > 1] == [], "two Active users for one XPM staff member"
    assert [e for e, n in by_email.items() if n > 1] == [], "two Active users with one email"


def assert_nothing_lost(world: SyncWorld, before: Before, *, deleted_by_active: frozenset[str]) -> None:
    users = {str(u["user_id"]): u for u in world.items("user")}
    clients = {str(c["client_id"]): c for c in world.items("client")}
    assert set(before.users) <= set(users), "an Active user disappeared"
    assert set(before.clients) - deleted_by_active <= set(clients), "an Active client disappeared"
    for user_id, old in before.users.items():
        if old.get("xpm_uuid"):
            assert users[user_id]["xpm_uuid"] == old["xpm_uuid"], "a user lost its XPM link"
        for attribute in OWNED_USER_ATTRIBUTES:
            if attribute in old:
                assert users[user_id].get(attribute) == old[attribute], f"user {attribute} changed"
    for client_id, old in before.clients.items():
        if client_id in deleted_by_active:
            continue
        if old.get("xpm_uuid"):
            assert clients[client_id]["xpm_uuid"] == old["xpm_uuid"], "a client lost its XPM link"
    trial = clients.get(world.firm.hand_made_client_id or "")
    assert trial is not None, "the client entered by hand during the trial is gone"
    assert trial["notes"] == TRIAL_NOTE
    assert trial["office_code"] == world.firm.office_code


def assert_no_token_leaked(fw: FaultWorld, before: Before) -> None:
    tokens = issued_tokens(fw, before)
    assert tokens, "the simulator issued no token: the check would prove nothing"
    for where, text in everything_written(fw).items():
        for token in tokens:
            assert token not in text, f"a token reached the {where}"


def assert_run_recorded(
    world: SyncWorld, before: Before, *, status: str, codes: tuple[str, ...], runs: int, left_running: int
) -> SyncRun:
    all_runs = world.runs()
    new = [run for run in all_runs if run.run_id not in before.run_ids]
    assert len(new) == runs, [(r.run_id, r.status) for r in new]
    running = [run for run in all_runs if run.status == "running" or run.finished_at is None]
    assert len(running) == left_running, "a run was left looking as if it were still running"
    # Run ids sort by their start second only; the config names the run that finished last.
    last_run_id = world.config().last_run_id
    latest = next((run for run in new if run.run_id == last_run_id), new[0])
    entries = world.entries(latest)
    assert latest.status == status, entries
    assert tuple(e.code for e in entries if e.entity == "run") == codes, entries
    assert latest.entry_count == len(entries)
    if status == "success":
        assert not [e for e in entries if e.severity == "error"], entries
    return latest


def assert_invariants(
    world: FaultWorld,
    *,
    before: Before,
    status: str,
    codes: tuple[str, ...] = (),
    runs: int = 1,
    deleted_by_active: frozenset[str] = frozenset(),
    left_running: int = 0,
) -> SyncRun:
    """The same checks after every fault (see the module docstring); returns the newest run."""
    CHECKS["invariant checks"] += 1
    CHECKS["runs checked"] += runs
    assert_no_duplicates(world.world)
    assert_nothing_lost(world.world, before, deleted_by_active=deleted_by_active)
    assert_no_token_leaked(world, before)
    return assert_run_recorded(
        world.world, before, status=status, codes=codes, runs=runs, left_running=left_running
    )


def assert_complete(world: SyncWorld) -> None:
    """Every XPM staff member and client is in Active, exactly once."""
    clients = world.items("client")
    assert {c["xpm_uuid"] for c in clients if c.get("xpm_uuid")} == {c.uuid for c in world.practice.clients}
    users = world.items("user")
    assert {u["xpm_uuid"] for u in users if u.get("xpm_uuid")} == {s.uuid for s in world.practice.staff}


def redeliver_and_complete(fw: FaultWorld) -> None:
    """SQS delivers the failed message again; that run completes the work, nothing lost or doubled."""
    retried = snapshot(fw)
    fw.redeliver_failed()

    assert_invariants(fw, before=retried, status="success")
    assert_complete(fw.world)


def assert_failed_internally_then_completed_by_the_retry(fw: FaultWorld, before: Before) -> None:
    """An unexpected error failed the run (nothing lost or doubled); SQS's redelivery completes it."""
    assert_invariants(fw, before=before, status="failed", codes=("INTERNAL_ERROR",))

    redeliver_and_complete(fw)


def recover(fw: FaultWorld) -> SyncRun:
    """The fault passes; the next hourly run completes the work with nothing lost or doubled."""
    fw.sim.faults.clear()
    before = snapshot(fw)
    fw.run_hourly()
    run = assert_invariants(fw, before=before, status="success")
    assert_complete(fw.world)
    return run


def hourly_run_with(
    fw: FaultWorld,
    monkeypatch: pytest.MonkeyPatch,
    fault: Callable[Concatenate[pytest.MonkeyPatch, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> tuple[T, list[Delivery]]:
    """One hourly run with the fault in place (what ``fault`` returns, and the deliveries); the fault
    is gone once the run ends, so a redelivery or the next run meets none."""
    with monkeypatch.context() as patch:
        injected = fault(patch, *args, **kwargs)
        return injected, fw.run_hourly()


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def reliability_report() -> Iterator[None]:
    """Counts for docs/reliability.md, written once the module is done (run it without xdist)."""
    yield
    directory = os.environ.get("RELIABILITY_REPORT_DIR")
    if directory:
        report = {"faults": dict(sorted(FAULT_LEDGER.items())), **dict(CHECKS)}
        Path(directory, "faults.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the Powertools logger writes as JSON, at DEBUG so every XPM call line is seen too."""
    with powertools_json_log(logging.DEBUG) as stream:
        yield stream


@pytest.fixture
def fw(
    world: SyncWorld,
    json_log: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FaultWorld]:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger=logger.name)
    # The admin is the notification user, so failed runs email through SES (moto) like in production.
    ConfigRepository(aws_clients.table(world.names.config_table)).update(
        world.firm_id, notification_user_id=world.firm.admin_user_id
    )
    harness = FaultWorld(world=world, json_log=json_log, caplog=caplog, capsys=capsys, xpm_options={})
    harness.xpm_options["sleep"] = harness.sleeps.append

    def xpm_client(**kwargs: Any) -> XpmApi:
        return XpmApi(**{**kwargs, **harness.xpm_options})

    # The worker builds its XPM client in composition.worker.sync_services: the same client, with
    # no real sleeps.
    monkeypatch.setattr(worker_composition, "XpmApi", xpm_client)
    # Call budgets are per tenant and per process; a spent day must not leak into the next test.
    reset_budgets()
    yield harness
    reset_budgets()


# --- XPM unavailable, slow or rate limited -------------------------------------------------------


@pytest.mark.parametrize("kind", ["server_error", "unavailable"])
def test_xpm_down_fails_the_run_and_sqs_retries_it_until_it_completes(fw: FaultWorld, kind: str) -> None:
    fw.fault(kind, times=None, path="client.api/list")
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed == [{"firm_id": fw.world.firm_id, "trigger": "schedule"}]
    assert len(fw.sim.calls_to("client.api/list")) == 4, "bounded retries inside the run"
    assert len(fw.sleeps) == 3
    assert_invariants(fw, before=before, status="failed", codes=("XPM_UNAVAILABLE",))

    fw.sim.faults.clear()
    redeliver_and_complete(fw)


class SqsClock:
    """moto's SQS clock, moved on by ``seconds``: visibility timeouts run out without waiting."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seconds = 0.0
        now_millis = moto_core_utils.unix_time_millis
        monkeypatch.setattr(moto_sqs, "unix_time_millis", lambda: now_millis() + self.seconds * 1000)


def test_a_run_failed_by_a_passing_outage_comes_back_in_minutes_with_the_start_sync_behind_it(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe of 2026-12-07: a failed record stayed invisible for the queue's 90-minute timeout,
    and held the firm's message group: Start Sync answered 202 and nothing ran for an hour and a half."""
    fw.fault("unavailable", times=None, path="client.api/list")
    assert fw.run_hourly()[0].failed
    fw.sim.faults.clear()
    composition.sync_queue(fw.world.names.queue_url).enqueue_manual(fw.world.firm_id)  # Start Sync, behind it

    sqs_clock = SqsClock(monkeypatch)
    sqs_clock.seconds = 290
    assert fw.drain() == [], "not yet: five minutes"
    sqs_clock.seconds = 310
    deliveries = fw.drain()

    assert [d.failed for d in deliveries] == [[]], "both delivered, in the firm's order, and both ran"
    runs = sorted(fw.world.runs(), key=lambda run: run.run_id)
    assert [(r.trigger, r.status) for r in runs] == [
        ("schedule", "failed"),
        ("schedule", "success"),
        ("manual", "success"),
    ]


def test_an_outage_that_persists_keeps_the_queues_pace_and_its_last_failure_frees_the_firm_at_once(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the first retry comes sooner: failures that persist keep the queue's 90 minutes (SPEC A5's
    third run in a row means hours, and so do the alarms); the last goes to the dead-letter queue at
    once, instead of holding the firm's message group for nothing (the review of 2026-12-07)."""
    fw.fault("unavailable", times=None, path="client.api/list")
    sqs_clock = SqsClock(monkeypatch)
    assert fw.run_hourly()[0].failed
    sqs_clock.seconds = 310
    assert [d.failed != [] for d in fw.drain()] == [True], "the second delivery, five minutes on"
    sqs_clock.seconds = 310 + 3600
    assert fw.drain() == [], "the third waits the queue's own timeout"
    sqs_clock.seconds = 310 + 5400 + 10
    assert [d.failed != [] for d in fw.drain()] == [True], "the third delivery, the last"

    # Then the record is in the dead-letter queue at once, and a Start Sync behind it runs now
    fw.sim.faults.clear()
    composition.sync_queue(fw.world.names.queue_url).enqueue_manual(fw.world.firm_id)
    deliveries = fw.drain()
    assert [d.failed for d in deliveries] == [[]]
    assert sorted(fw.world.runs(), key=lambda run: run.run_id)[-1].trigger == "manual"
    dead = fw.sqs.receive_message(QueueUrl=fw.world.names.dlq_url, MaxNumberOfMessages=10)
    assert len(dead.get("Messages", [])) == 1


def test_a_message_that_can_never_run_goes_to_the_dead_letter_queue_at_once_and_frees_the_firm(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe of 2026-12-07 (late): a message in the firm's group with a body the worker can
    never read was paced like an outage, and held the firm's group (Start Sync's run behind it)
    for 95 minutes on its way to the dead-letter queue."""
    # Given such a message in the firm's group, and Start Sync's run behind it
    world = fw.world
    SqsClock(monkeypatch)  # no time passes
    fw.sqs.send_message(
        QueueUrl=world.names.queue_url,
        MessageBody=json.dumps({"firm_id": world.firm_id, "trigger": "every-hour"}),
        MessageGroupId=world.firm_id,
    )
    composition.sync_queue(world.names.queue_url).enqueue_manual(world.firm_id)

    # When the queue is drained one message at a time (the template's BatchSize), with no time passing
    deliveries = drain_queue(fw.sqs, world.names.queue_url, fw.worker, batch_size=1)

    # Then the message failed its three deliveries in a row, went to the dead-letter queue, and
    # Start Sync's run ran
    assert [d.failed != [] for d in deliveries] == [True, True, True, False]
    assert [(run.trigger, run.status) for run in world.runs()][-1] == ("manual", "success")
    dead = fw.sqs.receive_message(QueueUrl=world.names.dlq_url, MaxNumberOfMessages=10)
    assert [json.loads(m["Body"])["trigger"] for m in dead.get("Messages", [])] == ["every-hour"]


def test_a_brief_xpm_outage_is_retried_inside_the_run(fw: FaultWorld) -> None:
    fw.fault("server_error", times=1, path="client.api/list")
    fw.fault("unavailable", times=1, path="client.api/list")
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed == []
    assert len(fw.sleeps) == 2
    assert_invariants(fw, before=before, status="success")
    assert_complete(fw.world)


def _clients_awaiting_retry(fw: FaultWorld, count: int) -> list[Any]:
    """``count`` clients that failed last run (no partner, no default partner) and that XPM's
    incremental list will not bring again, so that only the retry applies them; in retry order."""
    world = fw.world
    failing = world.clean_clients()[:count]
    for client in failing:
        world.practice.update_client(client.uuid, AccountManager=None)
        world.practice.client(client.uuid).modified_at = datetime.now(UTC) - timedelta(days=3)
    fw.run_hourly()
    assert world.awaiting_retry() == {c.uuid for c in failing}
    return sorted(failing, key=lambda c: c.uuid)


def test_xpm_failing_never_touches_the_retries_which_need_no_xpm_call(fw: FaultWorld) -> None:
    # Given three clients awaiting a retry, and a client renamed in XPM since the last run
    world = fw.world
    failing = _clients_awaiting_retry(fw, 3)
    renamed = world.clean_clients()[3]
    world.practice.update_client(renamed.uuid, Name="Renamed While The Others Wait Pty Ltd")
    fw.sim.reset_calls()
    before = snapshot(fw)

    # When the next run goes (XPM asked only for staff and the modified clients)
    deliveries = fw.run_hourly()

    # Then the renamed client syncs, the three are applied again from their copies and still fail
    assert deliveries[0].failed == []
    run = assert_invariants(fw, before=before, status="partial")
    assert run.counts["client"]["failed"] == 3
    assert {e.code for e in world.entries(run)} == {"PARTNER_MISSING"}
    assert run.xpm_calls == 2
    assert fw.sim.calls_to("client.api/get") == []
    assert world.client_by_uuid(renamed.uuid)["legal_name"] == "Renamed While The Others Wait Pty Ltd"
    assert world.awaiting_retry() == {c.uuid for c in failing}

    # And once the admin sets a Default Partner in Active, the next run syncs them, XPM untouched
    default_partner = world.set_default_partner()
    run = recover(fw)
    assert world.awaiting_retry() == set()
    assert [world.client_by_uuid(c.uuid)["partner_user_id"] for c in failing] == [default_partner] * 3
    assert world.entries(run) == []


def test_xpm_slower_than_the_client_timeout_fails_the_run_as_unavailable(fw: FaultWorld) -> None:
    fw.xpm_options["timeout"] = 0.3
    fw.fault("slow", times=None, path="client.api/list", seconds=1.0)
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed, "a timeout is transient: SQS retries the run"
    assert len(fw.sleeps) == 3, "four attempts, each cut off by the client timeout"
    assert_invariants(fw, before=before, status="failed", codes=("XPM_UNAVAILABLE",))


def test_one_slow_answer_is_retried_and_the_run_succeeds(fw: FaultWorld) -> None:
    fw.xpm_options["timeout"] = 0.3
    fw.fault("slow", times=1, path="staff.api/list", seconds=1.0)
    before = snapshot(fw)

    fw.run_hourly()

    assert len(fw.sleeps) == 1
    assert_invariants(fw, before=before, status="success")
    assert_complete(fw.world)


def test_the_client_timeout_bounds_every_call(simulator: Any) -> None:
    """At the XpmApi level: a hung XPM costs max_attempts x timeout, not a Lambda timeout."""
    practice = simulator.practices[0]
    token = simulator.issue_tokens(SIM_CLIENT_ID)["access_token"]
    simulator.faults.add("slow", times=None, path="staff.api", seconds=1.0)
    FAULT_LEDGER["slow"] += 1
    sleeps: list[float] = []
    xpm = XpmApi(
        api_url=simulator.url,
        tenant_id=practice.tenant_id,
        tokens=StaticToken(token),
        sleep=sleeps.append,
        max_attempts=3,
        timeout=0.2,
        budget=CallBudget(),
    )
    started = time.monotonic()
    with xpm, pytest.raises(XpmUnavailable) as caught:
        xpm.list_staff()

    assert time.monotonic() - started < 3 * 0.2 + 1.0
    assert len(sleeps) == 2
    assert token not in str(caught.value)
    assert token not in repr(caught.value)


def test_a_minute_rate_limit_waits_retry_after_and_the_run_succeeds(fw: FaultWorld) -> None:
    fw.fault("rate_limit", times=1, path="client.api/list", retry_after=7, problem="minute")
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert fw.sleeps == [7.0]
    assert deliveries[0].failed == []
    assert_invariants(fw, before=before, status="success")
    assert_complete(fw.world)


@pytest.mark.parametrize(
    ("problem", "retry_after"),
    [("day", 3600), ("minute", 100_000)],
    ids=["day-limit", "minute-limit-longer-than-the-invocation"],
)
def test_a_rate_limit_that_cannot_be_waited_out_fails_the_run_without_waiting(
    fw: FaultWorld, problem: str, retry_after: int
) -> None:
    fw.fault("rate_limit", times=None, path="client.api/list", retry_after=retry_after, problem=problem)
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert fw.sleeps == []
    assert len(fw.sim.calls_to("client.api/list")) == 1, "no call is wasted on a spent limit"
    assert deliveries[0].failed == [], "retrying at once cannot help: the next hourly run will"
    assert_invariants(fw, before=before, status="failed", codes=("XPM_RATE_LIMITED",))


# --- bad and hostile answers ---------------------------------------------------------------------

PASSWD = Path("/etc/passwd")
# What an expanded XXE would have pulled in: no line of it may appear anywhere.
PASSWD_LINES = [
    line.strip()
    for line in (PASSWD.read_text(encoding="utf-8").splitlines() if PASSWD.exists() else [])
    if len(line.strip()) > 8
]


@pytest.mark.parametrize(
    ("kind", "path", "params", "then_recover"),
    [
        ("status_error", "staff.api/list", {"description": "The API is disabled for this practice"}, False),
        ("status_error", "client.api/list", {"description": "Invalid parameter"}, False),
        ("malformed", "client.api/list", {}, False),
        # Cut short after some clients were applied: the next run must finish without duplicates.
        ("truncated", "client.api/list", {}, True),
        ("xxe", "staff.api/list", {}, False),
        ("xxe", "client.api/list", {}, True),
        ("billion_laughs", "staff.api/list", {}, False),
        ("billion_laughs", "client.api/list", {}, False),
        ("oversized", "client.api/list", {"mb": 1.5, "place": "header"}, False),
    ],
)
def test_a_bad_or_hostile_answer_is_refused_and_nothing_from_it_is_stored(
    fw: FaultWorld, kind: str, path: str, params: dict[str, Any], then_recover: bool
) -> None:
    # times=None: the same answer on the client's own retries too, so the run must refuse it.
    fw.fault(kind, times=None, path=path, **params)
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed == [], "the same answer would come back: not worth an SQS retry"
    assert_invariants(fw, before=before, status="failed", codes=("XPM_BAD_RESPONSE",))
    known = {c.uuid for c in fw.world.practice.clients}
    assert [c for c in fw.world.items("client") if c.get("xpm_uuid", "") not in known | {""}] == []
    written = everything_written(fw)
    for where, text in written.items():
        assert "lollollol" not in text, f"an entity was expanded into the {where}"
        for line in PASSWD_LINES:
            assert line not in text, f"local file content reached the {where}"
    if then_recover:
        recover(fw)


def test_a_truncated_staff_list_is_read_again_and_the_run_succeeds(fw: FaultWorld) -> None:
    fw.fault("truncated", times=1, path="staff.api/list")
    before = snapshot(fw)

    fw.run_hourly()

    assert len(fw.sim.calls_to("staff.api/list")) == 2
    assert_invariants(fw, before=before, status="success")
    assert_complete(fw.world)


# --- tokens --------------------------------------------------------------------------------------


def _every_refresh_refused(fw: FaultWorld, *, counted_as: str) -> None:
    """The access token has expired at Xero, and Xero refuses every refresh (invalid_grant)."""
    FAULT_LEDGER[counted_as] += 1
    fw.sim.expire_access_tokens()
    fw.fault("invalid_grant", times=None)


@pytest.mark.parametrize("how", ["expired-at-xero", "token-expired-answer"])
def test_an_expired_access_token_is_refreshed_once_and_the_run_succeeds(fw: FaultWorld, how: str) -> None:
    if how == "expired-at-xero":
        FAULT_LEDGER["expire_access_tokens"] += 1
        fw.sim.expire_access_tokens()
    else:
        fw.fault("token_expired", times=1, path="staff.api/list")
    before = snapshot(fw)

    fw.run_hourly()

    assert len(fw.sim.calls_to("/connect/token")) == 1
    assert fw.secret()["refresh_token"] not in before.secret_values, "the rotated token is stored"
    assert fw.world.config().status == "connected"
    assert_invariants(fw, before=before, status="success")
    assert_complete(fw.world)


def test_a_token_xero_ends_just_after_the_run_refreshed_it_is_refreshed_again(fw: FaultWorld) -> None:
    # Given the run must refresh at its first call, and Xero then ends the new token early, at the
    # client list (the probe of 2026-12-07, late: a refresh younger than 30 s was not repeated, the
    # refused token was sent again, and the firm was asked to reconnect)
    FAULT_LEDGER["expire_access_tokens"] += 1
    fw.sim.expire_access_tokens()
    fw.fault("token_expired", times=1, path="client.api/list")
    before = snapshot(fw)

    # When the hourly run goes
    fw.run_hourly()

    # Then it refreshes once more and syncs; the firm stays connected
    assert len(fw.sim.calls_to("/connect/token")) == 2
    assert fw.world.config().status == "connected"
    assert_invariants(fw, before=before, status="success")
    assert_complete(fw.world)


def test_a_refused_refresh_with_no_other_writer_asks_to_reconnect(fw: FaultWorld) -> None:
    _every_refresh_refused(fw, counted_as="expire_access_tokens")
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed == [], "reconnecting is not something a retry fixes"
    assert fw.world.config().status == "needs_reconnect"
    assert_invariants(fw, before=before, status="failed", codes=("XPM_NEEDS_RECONNECT",))
    assert fw.secret()["refresh_token"] in before.secret_values, "nothing overwrote the stored grant"
    assert len(sent_emails()) == 1, "the notification user is told to reconnect"


def test_a_firm_disconnected_during_a_run_that_meets_invalid_grant_stays_disconnected(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    _every_refresh_refused(fw, counted_as="disconnected_during_run")
    config_table = aws_clients.table(fw.world.names.config_table)
    refresh = XeroIdentity.refresh

    def disconnect_then_refresh(self: XeroIdentity, refresh_token: str, **options: Any) -> Any:
        # The admin presses Disconnect while the run is going on; the run's refresh then fails.
        ConfigRepository(config_table).update(
            fw.world.firm_id, status="disconnected", sync_enabled=False, run_pending=False
        )
        return refresh(self, refresh_token, **options)

    monkeypatch.setattr(XeroIdentity, "refresh", disconnect_then_refresh)
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed == []
    config = fw.world.config()
    assert config.status == "disconnected", "the run undid the disconnect"
    assert config.sync_enabled is False
    assert config.running_run_id is None
    assert sent_emails() == [], "no email asks a firm that just disconnected to reconnect"
    run = assert_invariants(fw, before=before, status="failed", codes=("XPM_NEEDS_RECONNECT",))
    [entry] = [e for e in fw.world.entries(run) if e.entity == "run"]
    assert "disconnected" in entry.message
    assert fw.run_hourly() == [], "a disconnected firm is not queued again"


def test_a_run_that_finds_the_token_secret_deleted_mid_disconnect_emails_nobody(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disconnect revokes, deletes the secret, then sets the status: a run may fall in between."""
    _every_refresh_refused(fw, counted_as="disconnected_during_run")
    secret_id = f"{fw.world.names.token_secret_prefix}{fw.world.firm_id}"
    refresh = XeroIdentity.refresh

    def delete_then_refresh(self: XeroIdentity, refresh_token: str, **options: Any) -> Any:
        secrets = aws_clients.client("secretsmanager")
        secrets.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
        return refresh(self, refresh_token, **options)

    monkeypatch.setattr(XeroIdentity, "refresh", delete_then_refresh)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed == [], "a retry cannot bring a disconnected firm back"
    assert fw.world.config().status == "connected", "the status is the disconnect's to set"
    assert sent_emails() == []
    [entry] = [e for e in fw.world.entries(fw.world.last_run()) if e.entity == "run"]
    assert "disconnected" in entry.message
    with pytest.raises(aws_clients.client("secretsmanager").exceptions.ResourceNotFoundException):
        aws_clients.client("secretsmanager").get_secret_value(SecretId=secret_id)


def test_a_connected_firm_with_no_status_recorded_is_asked_to_reconnect(fw: FaultWorld) -> None:
    """An item written before status existed counts as connected: the reconnect status is set."""
    aws_clients.table(fw.world.names.config_table).update_item(
        Key={"firm_id": fw.world.firm_id},
        UpdateExpression="REMOVE #s",
        ExpressionAttributeNames={"#s": "status"},
    )
    FAULT_LEDGER["revoke_all"] += 1
    fw.sim.revoke_all()
    before = snapshot(fw)

    fw.run_hourly()

    assert fw.world.config().status == "needs_reconnect"
    assert_invariants(fw, before=before, status="failed", codes=("XPM_NEEDS_RECONNECT",))
    assert len(sent_emails()) == 1


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "drop"])
def test_xero_identity_failing_during_a_refresh_is_xpm_unavailable_and_sqs_retries_it(
    fw: FaultWorld, kind: str
) -> None:
    FAULT_LEDGER["expire_access_tokens"] += 1
    fw.sim.expire_access_tokens()
    fw.fault(kind, times=None, path="/connect/token")
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed == [{"firm_id": fw.world.firm_id, "trigger": "schedule"}], "transient"
    assert fw.world.config().status == "connected"
    run = assert_invariants(fw, before=before, status="failed", codes=("XPM_UNAVAILABLE",))
    [entry] = [e for e in fw.world.entries(run) if e.entity == "run"]
    assert "contact support" not in entry.suggestion
    assert fw.secret()["refresh_token"] in before.secret_values, "the stored grant is untouched"

    fw.sim.faults.clear()
    redeliver_and_complete(fw)


def test_a_refresh_whose_answer_is_lost_on_the_way_back_costs_the_firm_nothing(fw: FaultWorld) -> None:
    # Given Xero rotates the grant on the run's refresh, and its answer never arrives (the probe of
    # 2026-12-07: the run failed for SQS to retry after 90 minutes, when Xero no longer honoured
    # the old refresh token, and the firm had to reconnect)
    fw.sim.expire_access_tokens()
    fw.fault("lose_answer", times=1)
    before = snapshot(fw)

    # When the hourly run goes
    deliveries = fw.run_hourly()

    # Then the refresh is asked again at once with the stored token, and the run completes
    assert deliveries[0].failed == []
    assert fw.world.config().status == "connected"
    assert_invariants(fw, before=before, status="success")
    assert len(fw.sim.calls_to("/connect/token")) == 2
    assert fw.secret()["refresh_token"] not in before.secret_values, "the rotated grant is stored"


def test_xero_refusing_the_apps_own_credentials_is_an_operator_entry_not_retried(fw: FaultWorld) -> None:
    FAULT_LEDGER["app_credentials_refused"] += 1
    fw.sim.expire_access_tokens()
    fw.sim.register_app(APP_CLIENT_ID, "a-secret-rotated-at-xero")  # ours no longer matches
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed == [], "the same credentials would be refused again"
    assert fw.world.config().status == "connected", "the firm's connection is not at fault"
    run = assert_invariants(fw, before=before, status="failed", codes=("XERO_APP_CREDENTIALS_INVALID",))
    [entry] = [e for e in fw.world.entries(run) if e.entity == "run"]
    assert "app credentials secret" in entry.suggestion
    assert fw.secret()["refresh_token"] in before.secret_values


def test_only_a_run_that_must_refresh_needs_the_apps_own_credentials(fw: FaultWorld) -> None:
    # Given the app's credentials secret cannot be read (deleted by mistake) and the firm's access
    # token is still fresh
    FAULT_LEDGER["app_secret_deleted"] += 1
    aws_clients.client("secretsmanager").delete_secret(
        SecretId=fw.world.names.app_secret_id, ForceDeleteWithoutRecovery=True
    )
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    # Then the hourly run completes: only a refresh asks Xero for anything with them
    assert deliveries[0].failed == []
    assert_invariants(fw, before=before, status="success")

    # And a run that must refresh fails by itself, recorded in the firm's log for an operator
    fw.sim.expire_access_tokens()
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed == [], "SQS retrying it would meet the same secret"
    run = assert_invariants(fw, before=before, status="failed", codes=("XERO_APP_CREDENTIALS_INVALID",))
    [entry] = [e for e in fw.world.entries(run) if e.entity == "run"]
    assert "could not be read" in entry.message
    # The secret's name is the operator's, in the log; the admin's entry does not show it
    assert fw.world.names.app_secret_id not in entry.message + entry.suggestion
    assert fw.world.config().status == "connected", "the firm's connection is not at fault"


def test_a_connection_revoked_at_xero_asks_to_reconnect(fw: FaultWorld) -> None:
    FAULT_LEDGER["revoke_all"] += 1
    fw.sim.revoke_all()
    before = snapshot(fw)

    deliveries = fw.run_hourly()

    assert deliveries[0].failed == []
    assert fw.world.config().status == "needs_reconnect"
    assert_invariants(fw, before=before, status="failed", codes=("XPM_NEEDS_RECONNECT",))


def test_two_workers_refreshing_one_firm_at_once_both_end_with_a_valid_token(fw: FaultWorld) -> None:
    FAULT_LEDGER["concurrent_refresh"] += 1
    before = snapshot(fw)
    fw.sim.expire_access_tokens()
    store = fw.token_store()
    workers = [store.for_firm(fw.world.firm_id) for _ in range(2)]

    tokens, errors = race([partial(worker.access_token, force_refresh=True) for worker in workers])

    assert errors == []
    assert len(tokens) == 2
    for token in tokens:
        status, _ = fw.sim.identity.check_access(token, fw.sim.now())
        assert status == "ok", "each worker ends with a token XPM accepts"
    # The stored grant still works: the next run refreshes from it and succeeds.
    fw.sim.expire_access_tokens()
    fw.run_hourly()
    assert fw.world.config().status == "connected"
    assert_invariants(fw, before=before, status="success")
    assert_complete(fw.world)


# --- DynamoDB throttled or changed under the run -------------------------------------------------


def _throttle(
    monkeypatch: pytest.MonkeyPatch, *, table: str, operation: str, times: int, names: str | None = None
) -> list[dict[str, Any]]:
    """``ProvisionedThroughputExceededException`` on the next ``times`` matching calls.

    Raised above botocore's own retries: this is the throttle that outlasted the SDK's backoff.
    ``names``: only calls whose ExpressionAttributeNames mention this attribute.
    """
    original = BaseClient._make_api_call
    hits: list[dict[str, Any]] = []

    def call(self: Any, operation_name: str, params: dict[str, Any]) -> Any:
        if (
            self.meta.service_model.service_name == "dynamodb"
            and operation_name == operation
            and params.get("TableName") == table
            and (names is None or names in params.get("ExpressionAttributeNames", {}).values())
            and len(hits) < times
        ):
            hits.append(params)
            raise ClientError(
                {
                    "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                operation_name,
            )
        return original(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", call)
    FAULT_LEDGER["dynamodb_throttle"] += times
    return hits


def test_a_throttled_active_write_fails_the_run_and_the_retry_completes_it(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(fw)
    hits, deliveries = hourly_run_with(
        fw, monkeypatch, _throttle, table=fw.world.names.active_table, operation="UpdateItem", times=1
    )

    assert len(hits) == 1
    assert deliveries[0].failed, "an AWS hiccup is transient: SQS retries the run"
    assert_failed_internally_then_completed_by_the_retry(fw, before)


def test_a_throttled_config_write_after_the_run_is_recorded_and_redone_without_duplicates(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(fw)
    hits, deliveries = hourly_run_with(
        fw,
        monkeypatch,
        _throttle,
        table=fw.world.names.config_table,
        operation="UpdateItem",
        times=1,
        names="last_run_id",
    )

    assert len(hits) == 1
    assert deliveries[0].failed, "the run's state was not saved: SQS delivers it again"
    first = assert_invariants(fw, before=before, status="success")
    assert fw.world.config().last_run_id is None

    fw.redeliver_failed()

    second = assert_invariants(fw, before=before, status="success", runs=2)
    assert_complete(fw.world)
    assert second.run_id != first.run_id
    assert fw.world.config().last_run_id == second.run_id


def _delete_before_first_update(monkeypatch: pytest.MonkeyPatch, entity: str, active_table: str) -> list[str]:
    """An admin deletes the record in Active just before the run's write of its change reaches
    DynamoDB (an UpdateItem, or the first update of a TransactWriteItems)."""
    original = BaseClient._make_api_call
    deleted: list[str] = []
    prefix = f"{entity.upper()}#"

    def call(self: Any, operation_name: str, params: dict[str, Any]) -> Any:
        updates = (
            [params]
            if operation_name == "UpdateItem"
            else [item["Update"] for item in params.get("TransactItems", []) if "Update" in item]
            if operation_name == "TransactWriteItems"
            else []
        )
        keys = [
            update["Key"]
            for update in updates
            if update["TableName"] == active_table and update["Key"]["sk"]["S"].startswith(prefix)
        ]
        if self.meta.service_model.service_name == "dynamodb" and keys and not deleted:
            deleted.append(keys[0]["sk"]["S"].removeprefix(prefix))
            original(self, "DeleteItem", {"TableName": active_table, "Key": keys[0]})
        return original(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", call)
    FAULT_LEDGER["conditional_check_failed"] += 1
    return deleted


def _rename_two_clients(fw: FaultWorld) -> list[str]:
    renamed = [c.uuid for c in fw.world.practice.clients if c.code != fw.world.firm.hand_made_client_code][:2]
    for number, uuid in enumerate(renamed):
        fw.world.practice.update_client(uuid, Name=f"Renamed {number} Pty Ltd")
    return renamed


def test_a_client_deleted_in_active_during_the_run_is_not_resurrected_by_that_write(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    fw.run_hourly()
    _rename_two_clients(fw)
    before = snapshot(fw)
    deleted, _ = hourly_run_with(
        fw, monkeypatch, _delete_before_first_update, "client", fw.world.names.active_table
    )

    assert len(deleted) == 1
    assert deleted[0] not in {c["client_id"] for c in fw.world.items("client")}, "the write resurrected it"
    # The record fails alone (see the next test); nothing is lost or doubled.
    assert_invariants(fw, before=before, status="partial", deleted_by_active=frozenset(deleted))


def test_a_client_deleted_in_active_during_the_run_fails_alone_and_the_others_sync(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    fw.run_hourly()
    renamed = _rename_two_clients(fw)
    before = snapshot(fw)
    deleted, deliveries = hourly_run_with(
        fw, monkeypatch, _delete_before_first_update, "client", fw.world.names.active_table
    )

    assert deliveries[0].failed == [], "one deleted record is no reason to run everything again"
    run = assert_invariants(fw, before=before, status="partial", deleted_by_active=frozenset(deleted))
    assert run.counts["client"]["updated"] == 1
    assert run.counts["client"]["failed"] == 1
    [gone_uuid] = [
        uuid for uuid in renamed if uuid not in {c.get("xpm_uuid") for c in fw.world.items("client")}
    ]
    [other_uuid] = [uuid for uuid in renamed if uuid != gone_uuid]
    assert fw.world.client_by_uuid(other_uuid)["legal_name"].startswith("Renamed ")
    assert [e.entity for e in fw.world.entries(run) if e.xpm_uuid == gone_uuid] == ["client"]
    assert gone_uuid in fw.world.awaiting_retry()


# --- the worker stopped mid-run, or run twice ------------------------------------------------------


def _stop_after(monkeypatch: pytest.MonkeyPatch, records: int, error: BaseException) -> None:
    original = ClientSync.apply
    applied = 0

    def apply(self: ClientSync, client: Any, **options: Any) -> None:
        nonlocal applied
        applied += 1
        if applied > records:
            raise error
        original(self, client, **options)

    monkeypatch.setattr(ClientSync, "apply", apply)
    FAULT_LEDGER["worker_stopped"] += 1


def test_a_run_that_crashes_mid_list_is_retried_and_completes_without_duplicates(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(fw)
    _, deliveries = hourly_run_with(fw, monkeypatch, _stop_after, 5, RuntimeError("connection reset by peer"))

    assert deliveries[0].failed
    assert (
        5 <= len([c for c in fw.world.items("client") if c.get("xpm_uuid")]) < len(fw.world.practice.clients)
    )
    assert_failed_internally_then_completed_by_the_retry(fw, before)


def test_a_worker_killed_mid_list_is_redelivered_and_completes_without_duplicates(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(fw)
    hourly_run_with(fw, monkeypatch, _stop_after, 5, Killed())
    assert fw.kills == 1

    fw.redeliver_failed()

    # The next run closes the killed one as failed: see the next test.
    assert_invariants(fw, before=before, status="success", runs=2)
    assert_complete(fw.world)


def test_the_next_run_closes_a_run_whose_worker_was_killed(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(fw)
    hourly_run_with(fw, monkeypatch, _stop_after, 5, Killed())
    [killed_id] = [run.run_id for run in fw.world.runs() if run.status == "running"]

    fw.redeliver_failed()

    assert_invariants(fw, before=before, status="success", runs=2)
    [killed] = [run for run in fw.world.runs() if run.run_id == killed_id]
    assert killed.status == "failed"
    assert killed.finished_at is not None
    assert [e.code for e in fw.world.entries(killed)] == ["INTERNAL_ERROR"]


def test_the_same_request_queued_twice_runs_twice_without_duplicates(fw: FaultWorld) -> None:
    FAULT_LEDGER["duplicate_message"] += 1
    before = snapshot(fw)
    body = json.dumps({"firm_id": fw.world.firm_id, "trigger": "manual"})
    for dedup in ("first", "second"):
        fw.sqs.send_message(
            QueueUrl=fw.world.names.queue_url,
            MessageBody=body,
            MessageGroupId=fw.world.firm_id,
            MessageDeduplicationId=dedup,
        )

    fw.drain()

    assert_invariants(fw, before=before, status="success", runs=2)
    assert_complete(fw.world)


def test_the_same_message_delivered_twice_runs_twice_without_duplicates(fw: FaultWorld) -> None:
    FAULT_LEDGER["duplicate_delivery"] += 1
    before = snapshot(fw)
    dispatch_handler(scheduled_event(), LocalContext("SyncDispatchFunction"))

    def twice(event: dict[str, Any], context: Any) -> Any:
        fw.worker(event, context)  # the first delivery's answer is lost (SQS delivers at least once)
        return fw.worker(event, context)

    drain_queue(fw.sqs, fw.world.names.queue_url, twice)

    assert_invariants(fw, before=before, status="success", runs=2)
    assert_complete(fw.world)


# --- what XPM sends: repeats, a huge record, no UUID, a slow drip, a 403 (issues 18 and 20) ---------


def test_one_uuid_three_times_in_an_answer_makes_no_duplicate_and_drops_the_copies(fw: FaultWorld) -> None:
    # Given XPM answering three clients three times each, the copies under other names
    FAULT_LEDGER["repeated_uuid"] += 1
    world = fw.world
    targets = world.clean_clients()[:3]
    copies = [
        copy
        for target in targets
        for copy in world.practice.repeat_client(target.uuid, copies=2, Name=f"Copy of {target.name}")
    ]
    before = snapshot(fw)

    # When the hourly run goes
    deliveries = fw.run_hourly()

    # Then the first copy of each syncs, each later one is XPM_UUID_REPEATED, dropped, none stored
    assert deliveries[0].failed == []
    run = assert_invariants(fw, before=before, status="partial")
    assert run.counts["client"]["failed"] == 6
    assert Counter(e.code for e in world.entries(run)) == {"XPM_UUID_REPEATED": 6}
    assert [world.client_by_uuid(t.uuid)["legal_name"] for t in targets] == [t.name for t in targets]
    assert world.awaiting_retry() == set()
    assert_complete(world)

    # And once XPM stops repeating them, the next run is clean
    world.practice.clients = [c for c in world.practice.clients if all(c is not k for k in copies)]
    recover(fw)


def test_an_oversized_record_fails_alone_and_its_batch_is_written_and_counted_truly(fw: FaultWorld) -> None:
    # Given a client, in the middle of the first sync's batch, whose Name has 450,000 characters
    FAULT_LEDGER["record_too_large"] += 1
    world = fw.world
    huge = world.clean_clients()[7]
    world.practice.update_client(huge.uuid, Name="N" * 450_000)
    before = snapshot(fw)

    # When the hourly run goes
    deliveries = fw.run_hourly()

    # Then that record alone is RECORD_TOO_LARGE; the others are written, and counted as written
    assert deliveries[0].failed == [], "the same record would come back: not worth an SQS retry"
    run = assert_invariants(fw, before=before, status="partial")
    assert [(e.code, e.xpm_uuid) for e in world.entries(run)] == [("RECORD_TOO_LARGE", huge.uuid)]
    linked = [c for c in world.items("client") if c.get("xpm_uuid")]
    assert run.counts["client"]["created"] + run.counts["client"]["updated"] == len(linked)
    assert {c["xpm_uuid"] for c in linked} == {c.uuid for c in world.practice.clients} - {huge.uuid}

    # And once XPM sends it with a usable Name, the next run completes the work
    world.practice.update_client(huge.uuid, Name="Back To Normal Pty Ltd")
    recover(fw)


def test_a_value_too_long_to_read_fails_its_record_alone_and_a_long_note_fails_nothing(
    fw: FaultWorld,
) -> None:
    """The probe of 2026-12-07 (evening): one text past the reader's 1,000,000-character limit,
    even in an element the sync never reads, failed the whole run, every run."""
    # Given one client whose Name, and another whose Notes, run past the reader's limit
    FAULT_LEDGER["value_too_long_to_read"] += 1
    world = fw.world
    long_name, long_note = world.clean_clients()[3], world.clean_clients()[9]
    world.practice.update_client(long_name.uuid, Name="N" * 1_100_000)
    world.practice.update_client(long_note.uuid, Notes="a pasted email thread " * 60_000)
    before = snapshot(fw)

    # When the hourly run goes
    deliveries = fw.run_hourly()

    # Then the first fails alone as too large; the second, and every other client, is written
    assert deliveries[0].failed == [], "the same record would come back: not worth an SQS retry"
    run = assert_invariants(fw, before=before, status="partial")
    assert [(e.code, e.xpm_uuid) for e in world.entries(run)] == [("RECORD_TOO_LARGE", long_name.uuid)]
    linked = {c["xpm_uuid"] for c in world.items("client") if c.get("xpm_uuid")}
    assert linked == {c.uuid for c in world.practice.clients} - {long_name.uuid}
    assert "pasted email thread" not in str(world.client_by_uuid(long_note.uuid))

    # And once XPM sends a usable Name, the next run completes the work
    world.practice.update_client(long_name.uuid, Name="Back To Normal Pty Ltd")
    recover(fw)


def test_a_record_without_a_uuid_fails_alone_and_the_others_sync(fw: FaultWorld) -> None:
    # Given XPM sends one client without its UUID
    FAULT_LEDGER["uuid_missing"] += 1
    world = fw.world
    nameless = world.clean_clients()[4]
    world.practice.drop_uuid(nameless.uuid)
    before = snapshot(fw)

    # When the hourly run goes
    deliveries = fw.run_hourly()

    # Then that record alone is CLIENT_UUID_MISSING, nothing is created for it, the others sync
    assert deliveries[0].failed == []
    run = assert_invariants(fw, before=before, status="partial")
    [entry] = world.entries(run)
    assert (entry.code, entry.xpm_uuid) == ("CLIENT_UUID_MISSING", None)
    synced = {c["xpm_uuid"] for c in world.items("client") if c.get("xpm_uuid")}
    assert synced == {c.uuid for c in world.practice.clients} - {nameless.uuid}
    assert "" not in synced

    # And once XPM sends its UUID again, the next run completes the work
    world.practice.drop_uuid(nameless.uuid, dropped=False)
    recover(fw)


def _run_hourly_scaled(fw: FaultWorld, clock: ScaledInvocations) -> list[Delivery]:
    """``fw.run_hourly`` with each worker invocation on the scaled clock, its time left recorded."""
    fw.responses.append(dispatch_handler(scheduled_event(), LocalContext("SyncDispatchFunction")))
    return drain_queue(fw.sqs, fw.world.names.queue_url, clock.wrap(fw.worker))


def _pad_clients(fw: FaultWorld, bytes_each: int) -> None:
    """Long notes (an element the sync ignores), so that a drip brings few clients at a time."""
    for client in fw.world.practice.clients:
        fw.world.practice.update_client(client.uuid, Notes="n" * bytes_each)


def test_a_slow_drip_answer_is_checkpointed_within_the_invocation_and_continued(
    fw: FaultWorld, scaled: ScaledInvocations
) -> None:
    # Given the client list drips once, 64 KB every 2 s (issue 18 item 8), clients of ~16 KB
    _pad_clients(fw, 16 * 1024)
    fw.fault("drip", times=1, path="client.api/list", bytes=64 * 1024, every=2.0)
    before = snapshot(fw)

    # When the hourly run goes, in invocations of two minutes (on a clock 20 times the wall's)
    deliveries = _run_hourly_scaled(fw, scaled)

    # Then the first part stops at its reading deadline and its continuation completes the run
    assert len(deliveries) == 2
    assert not any(d.failed for d in deliveries)
    assert min(scaled.left_at_return) > 0, f"an invocation was outlived: {scaled.left_at_return}"
    assert_invariants(fw, before=before, status="success")
    assert_complete(fw.world)
    assert fw.world.config().checkpoint is None


@pytest.mark.parametrize(
    "drip",
    [
        # 1 KB of the body a second: no client of ~16 KB arrives whole before the deadline
        {"bytes": 1024, "every": 1.0},
        # The status line and headers, 16 bytes every half second: each read well inside the
        # per-read timeout, the whole past the part's reading deadline (the probe of 2026-12-07:
        # the deadline held for the body only, and the invocation was outlived by minutes)
        {"part": "headers", "bytes": 16, "every": 0.5},
    ],
    ids=["body", "headers"],
)
def test_a_drip_too_slow_for_any_record_fails_with_xpm_too_slow_instead_of_looping(
    fw: FaultWorld, scaled: ScaledInvocations, drip: dict[str, Any]
) -> None:
    # Given a client list that drips so slowly that nothing of it can be applied in a part
    _pad_clients(fw, 16 * 1024)
    fw.fault("drip", times=None, path="client.api/list", **drip)
    before = snapshot(fw)

    # When the hourly run goes, in invocations of two minutes (on a clock 20 times the wall's)
    deliveries = _run_hourly_scaled(fw, scaled)

    # Then two parts apply nothing and the run fails with XPM_TOO_SLOW, not retried by SQS
    assert len(deliveries) == 2
    assert not any(d.failed for d in deliveries)
    assert min(scaled.left_at_return) > 0, f"an invocation was outlived: {scaled.left_at_return}"
    assert_invariants(fw, before=before, status="failed", codes=("XPM_TOO_SLOW",))
    assert fw.world.config().checkpoint is None

    # And once XPM answers at its usual pace, the next hourly run completes the work
    recover(fw)


def test_a_part_that_cannot_read_back_to_the_runs_place_keeps_it_and_the_run_ends(
    fw: FaultWorld, scaled: ScaledInvocations
) -> None:
    # The probe of 2026-12-07 (night): with XPM's pace varying from one call to the next, a part
    # that ran out of time while still reading up to its checkpoint saved its own position: the
    # place went 14, 2, 14, 2, ..., each part redid the last one's records as progress, and the run
    # never ended (a client list read per part, against the firm's daily quota).
    _pad_clients(fw, 16 * 1024)
    for _ in range(6):
        fw.fault("drip", times=1, path="client.api/list", bytes=64 * 1024, every=1.5)
        fw.fault("drip", times=1, path="client.api/list", bytes=16 * 1024, every=2.0)
    fw.responses.append(dispatch_handler(scheduled_event(), LocalContext("SyncDispatchFunction")))

    # When the hourly run goes, a part at a time (invocations of two minutes on a scaled clock)
    places: list[int] = []
    for _ in range(8):
        if not drain_queue(fw.sqs, fw.world.names.queue_url, scaled.wrap(fw.worker), max_batches=1):
            break
        checkpoint = fw.world.config().checkpoint
        if checkpoint is not None:
            places.append(checkpoint.processed)

    # Then the run's place never goes back, the run ends (XPM_TOO_SLOW: the parts after the
    # first apply nothing new) and no client is counted twice
    assert places, "the run never stopped for a checkpoint"
    assert places == sorted(places), places
    [run] = fw.world.runs()
    assert run.status == "failed"
    assert [e.code for e in fw.world.entries(run)] == ["XPM_TOO_SLOW"]
    assert sum(run.counts["client"].values()) <= len(fw.world.practice.clients)
    assert fw.world.config().checkpoint is None


def test_a_wrong_tenant_answer_asks_to_reconnect_and_is_not_retried(fw: FaultWorld) -> None:
    # Given the practice no longer lets this connection in (the gateway's 403 on every call)
    fw.fault("wrong_tenant", times=None)
    before = snapshot(fw)

    # When the hourly run goes
    deliveries = fw.run_hourly()

    # Then the run fails asking to reconnect, the firm is needs_reconnect, SQS does not retry it
    assert deliveries[0].failed == []
    assert_invariants(fw, before=before, status="failed", codes=("XPM_WRONG_TENANT",))
    assert fw.world.config().status == "needs_reconnect"
    assert len(sent_emails()) == 1, "only the admin can fix it: told at once"
    assert fw.run_hourly() == [], "not queued again until reconnected"


# --- the admin changes the tenant while a run is going (SPEC A6, issue 18 item 7) ----------------------


def _put_tenant(world: SyncWorld, tenant_id: str) -> int:
    """The admin's PUT /integrations/xpm choosing another tenant, through the API function."""
    event = load_event(
        "api",
        "put_config",
        claims={"custom:firm_id": world.firm_id},
        body={
            "sync_name": "XPM sync",
            "tenant_id": tenant_id,
            "default_office_code": world.firm.office_code,
            "notification_user_id": world.firm.admin_user_id,
        },
    )
    return int(api_handler(event, LocalContext("ApiFunction"))["statusCode"])


def test_a_tenant_change_during_a_run_leaves_the_new_tenant_a_first_full_read(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a firm synced from one practice, and a second practice the same consent reaches
    FAULT_LEDGER["tenant_change_during_run"] += 1
    world = fw.world
    fw.run_hourly()
    completed_before = world.config().last_completed_run_started_at
    second = generate_practice(11, staff=4, clients=20, problem_share=0, tenant_name="Second Practice")
    for client in second.clients:
        client.elements["ClientCode"] = f"B{client.elements['ClientCode']}"  # codes of its own
    world.sim.add_practice(second)
    _rename_two_clients(fw)  # so that the hourly run has records of the first practice to apply
    answers: list[int] = []
    apply = ClientSync.apply

    def put_tenant_then_apply(self: ClientSync, client: Any, **options: Any) -> None:
        if not answers:  # the admin saves the other tenant while this run is going
            answers.append(_put_tenant(world, second.tenant_id))
        apply(self, client, **options)

    before = snapshot(fw)

    # When the hourly run on the first practice ends after the PUT
    with monkeypatch.context() as patch:
        patch.setattr(ClientSync, "apply", put_tenant_then_apply)
        fw.run_hourly()

    # Then that run is recorded, but its end did not write the old practice's state over the reset
    assert answers == [200]
    assert_invariants(fw, before=before, status="success")
    config = world.config()
    assert config.tenant_id == second.tenant_id
    assert config.last_completed_run_started_at == completed_before, "the old tenant's run wrote its end"
    assert config.last_full_read_started_at is None

    # And the new tenant's first run reads every client and syncs all of them
    fw.sim.reset_calls()
    before = snapshot(fw)
    fw.run_hourly()
    assert_invariants(fw, before=before, status="success")
    [listing] = fw.sim.calls_to("client.api/list")
    assert listing.tenant_id == second.tenant_id
    assert "modifiedsince" not in listing.query, "the new tenant's first run must read every client"
    synced = {c["xpm_uuid"] for c in world.items("client") if c.get("xpm_uuid")}
    assert {c.uuid for c in second.clients} <= synced


def test_the_old_practice_refusing_a_run_after_another_was_chosen_leaves_the_new_one_connected(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe of 2026-12-07 (night): an admin often chooses another practice because the first
    # has left the app; the run still going on the old one then met its 403 and set the firm to
    # needs_reconnect, emailed the admin to reconnect, and Start Sync answered 409 NOT_CONNECTED.
    world = fw.world
    fw.run_hourly()
    second = generate_practice(11, staff=4, clients=20, problem_share=0, tenant_name="Second Practice")
    for client in second.clients:
        client.elements["ClientCode"] = f"B{client.elements['ClientCode']}"
    world.sim.add_practice(second)
    answers: list[int] = []
    sync_staff = UserSync.sync

    def put_tenant_then_sync_staff(self: UserSync, staff: Any) -> Any:
        if not answers:  # the admin saves the other practice; the old one then refuses (403)
            answers.append(_put_tenant(world, second.tenant_id))
            fw.fault("wrong_tenant", times=None, path="client.api/list")
        return sync_staff(self, staff)

    emails_before = len(sent_emails())

    # When the hourly run on the old practice is refused after the PUT
    with monkeypatch.context() as patch:
        patch.setattr(UserSync, "sync", put_tenant_then_sync_staff)
        fw.run_hourly()

    # Then that run failed on the old practice's refusal, and says so
    assert answers == [200]
    run = world.runs()[0]
    assert run.status == "failed"
    [entry] = [e for e in world.entries(run) if e.code == "XPM_WRONG_TENANT"]
    assert "Another practice was chosen" in entry.message
    # ... but the firm stays connected to the practice the admin chose, and nobody is told to reconnect
    config = world.config()
    assert (config.status, config.tenant_id, config.sync_enabled) == ("connected", second.tenant_id, True)
    assert len(sent_emails()) == emails_before

    # And the next hourly run reads the new practice whole
    fw.sim.faults.clear()
    fw.sim.reset_calls()
    fw.run_hourly()
    assert world.runs()[0].status == "success"
    [listing] = fw.sim.calls_to("client.api/list")
    assert listing.tenant_id == second.tenant_id
    assert "modifiedsince" not in listing.query


# --- notification email --------------------------------------------------------------------------


def test_ses_failing_leaves_the_run_recorded_and_the_allowance_unspent(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = BaseClient._make_api_call
    refused: list[str] = []

    def call(self: Any, operation_name: str, params: dict[str, Any]) -> Any:
        if self.meta.service_model.service_name == "ses" and operation_name.startswith("Send"):
            refused.append(operation_name)
            raise ClientError(
                {"Error": {"Code": "Throttling", "Message": "Maximum sending rate exceeded."}}, operation_name
            )
        return original(self, operation_name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", call)
    FAULT_LEDGER["ses_failure"] += 1
    # A record error is emailed at once (a failure of XPM's or ours would wait until it persists).
    broken = fw.world.clean_clients()[2]
    fw.world.practice.update_client(broken.uuid, BusinessStructure=None)
    before = snapshot(fw)

    fw.run_hourly()

    assert refused, "the partial run tried to email"
    run = assert_invariants(fw, before=before, status="partial")
    assert [(e.code, e.xpm_uuid) for e in fw.world.entries(run)] == [
        ("BUSINESS_STRUCTURE_MISSING", broken.uuid)
    ]
    notify = aws_clients.table(fw.world.names.notify_table)
    assert "Item" not in notify.get_item(Key={"firm_id": fw.world.firm_id}), "the allowance was given back"


def _an_hour_later(sqs_clock: SqsClock) -> None:
    sqs_clock.seconds += 3600


def _day_of_emails_over(fw: FaultWorld) -> None:
    """The firm's 24 hours since its last email have passed: the allowance's stored expiry is in the
    past (DynamoDB may not have deleted the item yet; the check never relies on it, SPEC A5)."""
    notify = aws_clients.table(fw.world.names.notify_table)
    notify.update_item(
        Key={"firm_id": fw.world.firm_id},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": int(time.time()) - 1},
    )


def test_a_lost_connection_whose_email_could_not_go_is_told_once_the_days_email_allows(
    fw: FaultWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe of 2026-12-07 (night): the firm had been emailed about a record error that day, so
    # the email saying its connection was lost was held back by the 24 hours; the firm then ran no
    # more, and nothing ever told its admin (SPEC A8: needs_reconnect comes with a notification).
    world = fw.world
    unpartnered = world.clean_clients()[0]
    world.practice.update_client(unpartnered.uuid, AccountManager=None)
    fw.run_hourly()
    assert world.last_run().status == "partial"
    assert len(sent_emails()) == 1

    fw.sim.expire_access_tokens()
    fw.fault("invalid_grant", times=None)
    fw.run_hourly()
    assert world.config().status == "needs_reconnect"
    assert len(sent_emails()) == 1, "one email a day: the second waits"

    # Within the day, the hourly schedule asks again and still sends nothing, and runs nothing
    sqs_clock = SqsClock(monkeypatch)  # an hour between dispatches: SQS drops no repeat
    runs_before = len(world.runs())
    _an_hour_later(sqs_clock)
    assert len(fw.run_hourly()) == 1, "the hour's notice"
    assert len(sent_emails()) == 1
    assert len(world.runs()) == runs_before

    # When the day's allowance is over, the next hour tells the admin, once
    _day_of_emails_over(fw)
    _an_hour_later(sqs_clock)
    fw.run_hourly()
    emails = sent_emails()
    assert len(emails) == 2
    assert "XPM sync failed" in emails[-1]
    assert "What went wrong: Xero no longer accepts this firm" in emails[-1]
    assert "XPM_NEEDS_RECONNECT" in emails[-1]
    assert world.config().reconnect_notice_run_id is None
    _day_of_emails_over(fw)
    _an_hour_later(sqs_clock)
    assert fw.run_hourly() == []
    assert len(sent_emails()) == 2
    assert len(world.runs()) == runs_before


def test_a_grant_refused_at_the_setup_page_is_recorded_and_told_as_a_run_would(fw: FaultWorld) -> None:
    # The probe of 2026-12-07 (night): the setup page's practices met Xero's refusal, the API set
    # needs_reconnect, and the firm's runs stopped with no run-level entry, no open problem and no
    # email: the notification user, maybe not the admin at the page, was never told (SPEC A8)
    world = fw.world
    fw.run_hourly()
    emails_before = len(sent_emails())
    fw.sim.revoke_all()  # the app removed at Xero

    event = load_event("api", "get_tenants", claims={"custom:firm_id": world.firm_id})
    answer = api_handler(event, LocalContext("ApiFunction"))
    fw.drain()  # the worker records what the API found

    assert answer["statusCode"] == 409
    assert world.config().status == "needs_reconnect"
    lost = world.runs()[0]
    assert (lost.status, lost.trigger) == ("failed", "manual")
    assert [e.code for e in world.entries(lost)] == ["XPM_NEEDS_RECONNECT"]
    assert world.open_problems()["run"] == {"XPM_NEEDS_RECONNECT"}
    assert len(sent_emails()) == emails_before + 1
    # ... once: the hour after queues nothing for it
    assert fw.run_hourly() == []
    assert len(sent_emails()) == emails_before + 1


# --- the checks themselves -----------------------------------------------------------------------


def test_the_leak_check_finds_a_token_that_reached_a_log_line(fw: FaultWorld) -> None:
    """The invariants would catch a leak: a token logged on purpose is found."""
    before = snapshot(fw)
    fw.run_hourly()
    assert_invariants(fw, before=before, status="success")

    logger.info("careless", extra={"value": fw.secret()["refresh_token"]})

    with pytest.raises(AssertionError, match="token reached the powertools log"):
        assert_no_token_leaked(fw, before)
