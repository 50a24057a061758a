"""XpmApi against the XPM simulator over a real loopback socket, and the call budget on its own."""

from __future__ import annotations

import gzip
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from xpm_sync.adapters.xpm import xml
from xpm_sync.adapters.xpm.budget import CallBudget, budget_for, reset_budgets
from xpm_sync.adapters.xpm.client import XpmApi, format_modified_since
from xpm_sync.adapters.xpm.errors import (
    XpmAuthError,
    XpmBadResponse,
    XpmError,
    XpmRateLimited,
    XpmTooSlow,
    XpmUnavailable,
    XpmWrongTenant,
)

from local.xpm_sim import Call, Practice, Simulator
from tests.fixtures.simulator import SIM_CLIENT_ID


class SimTokens:
    """Token source backed by the simulator's identity: a forced refresh gets a new grant."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self.issued: list[str] = []
        self.forced = 0
        self._current = self._new()

    def _new(self) -> str:
        token = str(self._sim.issue_tokens(SIM_CLIENT_ID)["access_token"])
        self.issued.append(token)
        return token

    def access_token(self, *, force_refresh: bool = False, refused: str | None = None) -> str:
        if force_refresh or refused == self._current:
            self.forced += 1
            self._current = self._new()
        return self._current


class StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def access_token(self, *, force_refresh: bool = False, refused: str | None = None) -> str:
        return self.token


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sim(simulator: Simulator) -> Simulator:
    return simulator


@pytest.fixture
def practice(sim_practice: Practice) -> Practice:
    return sim_practice


@pytest.fixture(autouse=True)
def _fresh_budgets() -> Iterator[None]:
    # The registry is process-wide; tests must not inherit each other's spent minutes.
    reset_budgets()
    yield
    reset_budgets()


@pytest.fixture
def tokens(sim: Simulator) -> SimTokens:
    return SimTokens(sim)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_client(sim: Simulator, practice: Practice, tokens: SimTokens, sleeps: Sleeps) -> Iterator[Any]:
    made: list[XpmApi] = []

    def make(**overrides: Any) -> XpmApi:
        options: dict[str, Any] = {
            "api_url": sim.url,
            "tenant_id": practice.tenant_id,
            "tokens": tokens,
            "sleep": sleeps,
            "budget": CallBudget(),
        }
        options.update(overrides)
        client = XpmApi(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def xpm_calls(sim: Simulator) -> list[Call]:
    return sim.calls_to("/practicemanager/3.1/")


# --- the happy paths ------------------------------------------------------------------------


def test_list_staff_reads_every_staff_member(make_client, practice, sim):
    client = make_client()
    staff = client.list_staff()
    assert [s.uuid for s in staff] == [s.uuid for s in practice.staff]
    assert [s.email for s in staff] == [s.email or None for s in practice.staff]
    assert client.calls == 1
    (call,) = xpm_calls(sim)
    assert call.path.endswith("/practicemanager/3.1/staff.api/list")
    assert call.tenant_id == practice.tenant_id
    assert call.status == 200


def test_iter_clients_streams_every_detailed_client(make_client, practice, sim):
    client = make_client()
    clients = list(client.iter_clients())
    assert [c.uuid for c in clients] == [c.uuid for c in practice.clients]
    by_uuid = {c.uuid: c for c in practice.clients}
    for read in clients:
        expected = by_uuid[read.uuid]
        assert read.name == (expected.elements.get("Name") or "").strip() or None
        assert read.client_code == (expected.elements.get("ClientCode") or "").strip() or None
        assert read.account_manager_uuid == expected.account_manager_uuid
        assert [g.uuid for g in read.groups] == [g.uuid for g in expected.groups]
    multi_line = [c for c in clients if c.address and "\n" in c.address]
    assert multi_line, "the generated practice should have multi-line addresses"
    (call,) = xpm_calls(sim)
    assert call.query == {"detailed": "true"}
    assert client.calls == 1


def test_modified_since_is_sent_in_utc(make_client, practice, sim):
    client = make_client()
    changed = practice.clients[3]
    sim.advance_time(3600)
    since_local = practice.clock().astimezone(timezone(timedelta(hours=10)))
    sim.advance_time(60)
    practice.update_client(changed.uuid, Name="Renamed Pty Ltd")
    clients = list(client.iter_clients(modified_since=since_local))
    assert [c.uuid for c in clients] == [changed.uuid]
    assert clients[0].name == "Renamed Pty Ltd"
    query = xpm_calls(sim)[-1].query
    assert query["detailed"] == "true"
    assert query["modifiedsince"] == since_local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_modified_since_format():
    moment = datetime(2026, 3, 1, 9, 30, 15, 999, tzinfo=timezone(timedelta(hours=11)))
    assert format_modified_since(moment) == "2026-02-28T22:30:15"
    with pytest.raises(ValueError, match="timezone"):
        format_modified_since(datetime(2026, 3, 1, 9, 30))


def test_context_manager_closes_its_own_http_client(sim, practice, tokens):
    with XpmApi(api_url=sim.url, tenant_id=practice.tenant_id, tokens=tokens, budget=CallBudget()) as client:
        assert client.list_staff()
    with pytest.raises(RuntimeError):
        client.list_staff()


def test_a_given_http_client_is_left_open(sim, practice, tokens):
    http = httpx.Client()
    with XpmApi(
        api_url=sim.url, tenant_id=practice.tenant_id, tokens=tokens, http=http, budget=CallBudget()
    ) as client:
        client.list_staff()
    assert not http.is_closed
    http.close()


# --- auth and tenant --------------------------------------------------------------------------


def test_expired_token_is_refreshed_once_and_retried(make_client, tokens, sim):
    sim.faults.add("token_expired")
    client = make_client()
    assert client.list_staff()
    assert tokens.forced == 1
    assert [c.status for c in xpm_calls(sim)] == [401, 200]
    assert client.calls == 2


def test_a_token_refused_right_after_its_refresh_is_replaced_once_more(make_client, tokens, sim):
    # Xero may end a new token early; a second one settles it (the probes of 2026-12-07, late).
    sim.faults.add("token_expired", times=2)
    client = make_client()
    assert client.list_staff()
    assert tokens.forced == 2
    assert [c.status for c in xpm_calls(sim)] == [401, 401, 200]


def test_every_token_refused_is_an_auth_error_after_two_refreshes(make_client, tokens, sim):
    sim.faults.add("token_expired", times=None)
    client = make_client()
    with pytest.raises(XpmAuthError):
        client.list_staff()
    assert tokens.forced == 2
    assert client.calls == 3


def test_a_token_another_thread_replaced_and_xero_then_refused_is_replaced(make_client, sim):
    # The review of 2026-12-07 (late): this call's token A was refused, another thread had already
    # replaced it by B (so asking cost no refresh), and Xero then refused B too: the call gave up
    # with B never refreshed, and the firm was asked to reconnect.
    class SharedTokens:
        def __init__(self) -> None:
            self.current = "token-A"
            self.refreshed = 0

        def access_token(self, *, force_refresh: bool = False, refused: str | None = None) -> str:
            if refused == "token-A":
                return "token-B"  # another thread's refresh already replaced it
            if refused is not None:
                self.refreshed += 1
                self.current = SimTokens(sim)._current  # a token XPM accepts
            return self.current

    shared = SharedTokens()
    client = make_client(tokens=shared)

    assert client.list_staff()
    assert shared.refreshed == 1


def test_unknown_token_is_an_auth_error(make_client):
    client = make_client(tokens=StaticToken("not-a-token-the-simulator-issued"))
    with pytest.raises(XpmAuthError):
        client.list_staff()


def test_wrong_tenant_is_403(make_client):
    client = make_client(tenant_id="11111111-2222-3333-4444-555555555555")
    with pytest.raises(XpmWrongTenant):
        client.list_staff()
    assert client.calls == 1


# --- rate limits ------------------------------------------------------------------------------


def test_429_waits_retry_after_when_it_fits(make_client, sleeps, sim):
    sim.faults.add("rate_limit", retry_after=7, problem="minute")
    client = make_client(remaining_seconds=lambda: 600.0)
    assert client.list_staff()
    assert 7.0 in sleeps.calls
    assert [c.status for c in xpm_calls(sim)] == [429, 200]


def test_429_raises_when_retry_after_does_not_fit(make_client, sleeps, sim):
    sim.faults.add("rate_limit", retry_after=30, problem="minute")
    client = make_client(remaining_seconds=lambda: 20.0)
    with pytest.raises(XpmRateLimited) as caught:
        client.list_staff()
    assert caught.value.retry_after == 30
    assert caught.value.problem == "minute"
    assert sleeps.calls == []
    assert client.calls == 1


def test_429_for_the_day_never_waits_and_blocks_later_calls(make_client, sleeps, sim):
    sim.faults.add("rate_limit", retry_after=5, problem="day")
    budget = CallBudget()
    client = make_client(remaining_seconds=lambda: 900.0, budget=budget)
    with pytest.raises(XpmRateLimited) as caught:
        client.list_staff()
    assert caught.value.problem == "day"
    assert sleeps.calls == []
    # The tenant's quota is spent: the next call is refused without costing a request.
    with pytest.raises(XpmRateLimited) as again:
        client.list_staff()
    assert again.value.problem == "day"
    assert client.calls == 1


def test_429_retries_are_bounded_by_max_attempts(make_client, sleeps, sim):
    sim.faults.add("rate_limit", times=10, retry_after=1, problem="minute")
    client = make_client(max_attempts=3)
    with pytest.raises(XpmRateLimited):
        client.list_staff()
    assert client.calls == 3
    assert sleeps.calls == [1.0, 1.0]


def test_a_minute_limit_that_persists_after_one_window_is_not_waited_out_again(sleeps):
    # No invocation deadline (a handler called without a Lambda context): still one window at most.
    client = _mock_client([_too_many("minute", retry_after="60")], sleeps)

    with pytest.raises(XpmRateLimited) as caught:
        client.list_staff()

    assert sleeps.calls == [60.0]
    assert client.calls == 2
    assert caught.value.problem == "minute"


def test_a_retry_after_given_as_an_http_date_is_waited_until_that_moment(sleeps):
    # RFC 9110 lets Retry-After be a date; it was taken as missing (a flat minute).
    when = datetime.now(UTC) + timedelta(seconds=20)
    client = _mock_client(
        [_too_many("minute", retry_after=format_datetime(when, usegmt=True)), _ok()], sleeps
    )

    assert client.list_staff()
    [waited] = sleeps.calls
    assert 17.0 <= waited <= 20.0


def test_rate_limit_waits_that_add_up_to_the_cap_are_all_waited_out(sleeps):
    client = _mock_client([_too_many("minute", retry_after="45")] * 2 + [_ok()], sleeps)

    assert client.list_staff()
    assert sleeps.calls == [45.0, 45.0]  # 90 s in all: the cap itself, still waited


def test_the_simulators_own_minute_limit_is_respected(make_client, sim):
    # Another process spent this tenant's minute: the local budget has room, XPM has none.
    sim.limits.per_minute = 3
    client = make_client(budget=CallBudget(per_minute=100), remaining_seconds=lambda: 200.0)
    for _ in range(3):
        client.list_staff()
    with pytest.raises(XpmRateLimited) as caught:
        client.list_staff()
    assert caught.value.problem == "minute"
    assert caught.value.retry_after > 5


# XPM answers the simulator cannot be made to give (a 429 without Retry-After, a 400 for a client)
# come from httpx.MockTransport: still no network.

MOCK_API = "https://api.xero.test"
MOCK_TENANT = "22222222-3333-4444-5555-666666666666"
STAFF_XML = (
    b'<Response api-method="List"><Status>OK</Status><StaffList><Staff>'
    b"<UUID>aaaaaaaa-0000-0000-0000-000000000001</UUID><Name>Ann Lee</Name>"
    b"<Email>ann@example.com</Email></Staff></StaffList></Response>"
)


def _xml_error(description: str) -> bytes:
    return (
        f'<Response api-method="Get"><Status>ERROR</Status>'
        f"<ErrorDescription>{description}</ErrorDescription></Response>"
    ).encode()


def _mock_client(answers: list[httpx.Response], sleeps: Sleeps, **overrides: Any) -> XpmApi:
    """An XpmApi whose calls get ``answers`` in turn (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        # A fresh response each time: one given twice would hand out a stream already consumed.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return _client_answered_by(handler, sleeps, **overrides)


def _client_answered_by(
    handler: Callable[[httpx.Request], httpx.Response], sleeps: Sleeps, **overrides: Any
) -> XpmApi:
    """An XpmApi whose every call ``handler`` answers."""
    options: dict[str, Any] = {
        "api_url": MOCK_API,
        "tenant_id": MOCK_TENANT,
        "tokens": StaticToken("mock-token"),
        "http": httpx.Client(transport=httpx.MockTransport(handler)),
        "sleep": sleeps,
        "budget": CallBudget(),
    }
    options.update(overrides)
    return XpmApi(**options)


def _too_many(problem: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"X-Rate-Limit-Problem": problem}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return httpx.Response(429, headers=headers, json={"Title": "Too Many Requests"})


def _ok(body: bytes = STAFF_XML) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"Content-Type": "text/xml"})


def _answered_with_encoding(body: bytes, sleeps: Sleeps) -> XpmApi:
    """An XpmApi whose calls get ``body`` as sent on the wire, labelled gzip."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": "text/xml", "Content-Encoding": "gzip"}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))

    return _client_answered_by(handler, sleeps)


def test_a_gzip_answer_is_read_as_the_xml_it_encodes(sleeps):
    client = _answered_with_encoding(gzip.compress(STAFF_XML), sleeps)

    assert [staff.email for staff in client.list_staff()] == ["ann@example.com"]


def test_an_answer_that_is_not_the_gzip_it_claims_is_a_bad_response_not_a_crash(sleeps):
    client = _answered_with_encoding(STAFF_XML, sleeps)

    with pytest.raises(XpmBadResponse, match="could not be decoded"):
        client.list_staff()
    assert client.calls == 1
    assert sleeps.calls == []


def test_a_list_that_answers_500_with_a_not_found_description_is_still_retried(sleeps):
    # A list's 500 is a server error, whatever its description says.
    answers = [httpx.Response(500, content=_xml_error("Client not found")), _ok()]
    client = _mock_client(answers, sleeps)

    assert client.list_staff()
    assert client.calls == 2


def test_a_json_error_description_is_reported_for_a_refused_call(sleeps):
    client = _mock_client([httpx.Response(400, json={"ErrorDescription": "Invalid detailed flag"})], sleeps)

    with pytest.raises(xml.XpmStatusError) as caught:
        client.list_staff()

    assert caught.value.description == "Invalid detailed flag"


# --- server failures --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["unavailable", "server_error", "drop"])
def test_server_failures_are_retried_then_succeed(make_client, sleeps, sim, kind):
    sim.faults.add(kind, times=2)
    client = make_client()
    assert client.list_staff()
    assert len(sleeps.calls) == 2
    # Full jitter: each wait is somewhere below its exponential ceiling.
    assert 0 <= sleeps.calls[0] <= 1.0
    assert 0 <= sleeps.calls[1] <= 2.0
    assert client.calls == 3


@pytest.mark.parametrize("kind", ["unavailable", "server_error", "drop"])
def test_server_failures_exhaust_the_attempts(make_client, sleeps, sim, kind):
    sim.faults.add(kind, times=None)
    client = make_client(max_attempts=4)
    with pytest.raises(XpmUnavailable):
        client.list_staff()
    assert client.calls == 4
    assert len(sleeps.calls) == 3


def test_no_retry_when_the_backoff_does_not_fit_the_time_left(make_client, sleeps, sim):
    sim.faults.add("unavailable", times=None)
    client = make_client(remaining_seconds=lambda: 1.0)
    with pytest.raises(XpmUnavailable):
        client.list_staff()
    assert client.calls == 1


def test_slow_answer_times_out_and_is_retried(make_client, sleeps, sim):
    sim.faults.add("slow", seconds=1.5)
    client = make_client(timeout=0.3)
    assert client.list_staff()
    assert client.calls == 2
    assert len(sleeps.calls) == 1


def test_timeout_applies_to_a_given_http_client(make_client, sleeps, sim):
    sim.faults.add("slow", seconds=1.5)
    with httpx.Client(timeout=120) as http:
        client = make_client(http=http, timeout=0.3)
        assert client.list_staff()
    assert client.calls == 2


def _free_port() -> int:
    # Bound then closed at once: nothing listens there, so connecting is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_connection_refused_is_unavailable_and_not_counted(practice, tokens, sleeps):
    client = XpmApi(
        api_url=f"http://127.0.0.1:{_free_port()}",
        tenant_id=practice.tenant_id,
        tokens=tokens,
        sleep=sleeps,
        budget=CallBudget(),
        max_attempts=2,
    )
    with client, pytest.raises(XpmUnavailable):
        client.list_staff()
    # Refused before reaching XPM: no quota spent, so not reported as an XPM call.
    assert client.calls == 0
    assert len(sleeps.calls) == 1


# --- bad answers ------------------------------------------------------------------------------


def test_status_error_is_a_bad_response_and_not_retried(make_client, sim):
    sim.faults.add("status_error", description="The modifiedsince parameter is invalid")
    client = make_client()
    with pytest.raises(xml.XpmStatusError) as caught:
        client.list_staff()
    assert isinstance(caught.value, XpmBadResponse)
    assert caught.value.description == "The modifiedsince parameter is invalid"
    assert client.calls == 1


def test_truncated_answer_is_retried_once(make_client, sim):
    sim.faults.add("truncated")
    client = make_client()
    assert client.list_staff()
    assert client.calls == 2


def test_truncated_twice_is_a_bad_response(make_client, sim):
    sim.faults.add("truncated", times=2)
    client = make_client()
    with pytest.raises(XpmBadResponse):
        client.list_staff()
    assert client.calls == 2


def test_truncated_client_list_after_records_is_not_retried(make_client, sim):
    sim.faults.add("truncated", path="client.api/list")
    client = make_client()
    seen = []
    with pytest.raises(XpmBadResponse):
        seen.extend(client.iter_clients())
    assert client.calls == 1


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("malformed", {}),
        ("xxe", {}),
        ("billion_laughs", {}),
        ("oversized", {"mb": 2, "place": "header"}),
    ],
)
def test_hostile_or_broken_xml_is_refused_without_retry(make_client, sim, kind, params):
    sim.faults.add(kind, **params)
    client = make_client()
    with pytest.raises(XpmBadResponse):
        list(client.iter_clients())
    assert client.calls == 1


def test_a_record_with_a_value_too_long_to_read_is_handed_on_flagged(make_client, sim):
    sim.faults.add("oversized", mb=2)
    client = make_client()

    [record] = list(client.iter_clients())

    assert record.oversized
    assert record.name is None
    assert client.calls == 1


# --- streaming and the connection ---------------------------------------------------------


def test_stopping_the_iterator_early_releases_the_connection(make_client, sim):
    budget = CallBudget(concurrent=1)
    client = make_client(budget=budget)
    clients = client.iter_clients()
    first = next(clients)
    assert first.uuid
    assert budget.in_flight == 1
    clients.close()
    assert budget.in_flight == 0
    # With room for one call at a time, a leaked slot would make this wait, and refuse at once.
    assert client.list_staff()
    assert budget.in_flight == 0


def test_dropping_the_iterator_releases_the_connection(make_client):
    budget = CallBudget(concurrent=1)
    client = make_client(budget=budget)
    clients = client.iter_clients()
    next(clients)
    del clients
    assert budget.in_flight == 0


# --- the budget at the simulator --------------------------------------------------------------


class CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = super().handle_request(request)
            response.read()
            return response
        finally:
            with self._lock:
                self.in_flight -= 1


def test_never_more_than_five_calls_in_flight(sim, practice, tokens):
    sim.faults.add("slow", times=None, seconds=0.3)
    transport = CountingTransport()
    http = httpx.Client(transport=transport)
    shared = budget_for(practice.tenant_id)
    clients = [
        XpmApi(api_url=sim.url, tenant_id=practice.tenant_id, tokens=tokens, http=http) for _ in range(2)
    ]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            clients[index % 2].list_staff()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    http.close()
    assert errors == []
    assert transport.max_in_flight == 5
    # The simulator enforces the same limit: it never had to refuse a call as "concurrent".
    assert [c.status for c in xpm_calls(sim)] == [200] * 8
    assert sum(c.calls for c in clients) == 8
    assert shared.in_flight == 0


def test_clients_of_one_tenant_share_a_budget(sim, practice, tokens):
    one = XpmApi(api_url=sim.url, tenant_id=practice.tenant_id, tokens=tokens)
    two = XpmApi(api_url=sim.url, tenant_id=practice.tenant_id, tokens=tokens)
    other = XpmApi(api_url=sim.url, tenant_id="another-tenant", tokens=tokens)
    try:
        assert one._budget is two._budget
        assert one._budget is not other._budget
    finally:
        for client in (one, two, other):
            client.close()


# --- the token stays secret -------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


@pytest.mark.parametrize(
    ("kind", "params", "times"),
    [
        ("token_expired", {}, 2),
        ("unavailable", {}, None),
        ("drop", {}, None),
        ("rate_limit", {"retry_after": 99, "problem": "minute"}, 1),
        ("status_error", {"description": "Something failed"}, 1),
        ("malformed", {}, 1),
        ("slow", {"seconds": 1.0}, None),
    ],
)
def test_the_token_never_reaches_exceptions_or_logs(
    make_client, tokens, sim, caplog, capfd, kind, params, times
):
    caplog.set_level(logging.DEBUG, logger="xpm-sync")
    sim.faults.add(kind, times=times, **params)
    client = make_client(remaining_seconds=lambda: 30.0, max_attempts=2, timeout=0.3)
    with pytest.raises(XpmError) as caught:
        client.list_staff()
    texts = [f"{e!s} {e!r}" for e in _chain(caught.value)]
    texts.append(caplog.text)
    texts.extend(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    out, err = capfd.readouterr()
    texts.extend([out, err])
    assert tokens.issued
    for token in tokens.issued:
        for text in texts:
            assert token not in text
    assert any(r.getMessage() == "XPM call" for r in caplog.records)


def test_each_call_logs_path_status_and_duration(make_client, caplog):
    caplog.set_level(logging.DEBUG, logger="xpm-sync")
    make_client().list_staff()
    (record,) = [r for r in caplog.records if r.getMessage() == "XPM call"]
    assert record.path == "staff.api/list"
    assert record.status == 200
    assert isinstance(record.ms, int)


# --- the budget on its own ------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_budget_allows_sixty_a_minute_then_waits_for_the_window():
    clock = FakeClock()
    budget = CallBudget(clock=clock, sleep=clock.sleep)
    for i in range(60):
        budget.acquire(max_wait=0)
        budget.release()
        clock.now += 0.5 if i < 59 else 0
    assert clock.slept == []
    budget.acquire(max_wait=120)
    # The oldest call started at 1000.0, so room comes back at 1060.0.
    assert clock.slept == [pytest.approx(60 - 29.5)]
    assert clock.now == pytest.approx(1060.0)
    budget.release()


def test_budget_refuses_a_wait_that_does_not_fit():
    clock = FakeClock()
    budget = CallBudget(per_minute=2, clock=clock, sleep=clock.sleep)
    budget.acquire()
    budget.release()
    clock.now += 10
    budget.acquire()
    budget.release()
    with pytest.raises(XpmRateLimited) as caught:
        budget.acquire(max_wait=49)
    assert caught.value.problem == "minute"
    assert caught.value.retry_after == pytest.approx(50)
    assert clock.slept == []


def test_budget_concurrency_wait_and_refusal():
    budget = CallBudget(concurrent=2)
    budget.acquire()
    budget.acquire()
    with pytest.raises(XpmRateLimited) as caught:
        budget.acquire(max_wait=0)
    assert caught.value.problem == "concurrent"
    released = threading.Event()

    def release() -> None:
        released.set()
        budget.release()

    threading.Timer(0.1, release).start()
    budget.acquire(max_wait=5)  # waits for the slot (it would raise if the wait ran out)
    assert released.is_set()
    assert budget.in_flight == 2


def test_budget_tracks_headers_and_day_zero_refuses():
    clock = FakeClock()
    budget = CallBudget(clock=clock, sleep=clock.sleep)
    budget.observe(
        {"X-MinLimit-Remaining": "42", "X-DayLimit-Remaining": "4000", "X-AppMinLimit-Remaining": "x"}
    )
    assert (budget.minute_remaining, budget.day_remaining, budget.app_minute_remaining) == (42, 4000, None)
    budget.observe({"X-DayLimit-Remaining": "0"})
    with pytest.raises(XpmRateLimited) as caught:
        budget.acquire()
    assert caught.value.problem == "day"
    # After a while one probe is let through; its answer says whether the day is still spent.
    clock.now += 301
    budget.acquire()
    budget.observe({"X-DayLimit-Remaining": "10"})
    budget.release()
    budget.acquire()
    budget.release()


def test_budget_day_spent_expires_after_retry_after():
    clock = FakeClock()
    budget = CallBudget(clock=clock, sleep=clock.sleep)
    budget.day_spent(120)
    with pytest.raises(XpmRateLimited) as caught:
        budget.acquire()
    assert caught.value.retry_after == pytest.approx(120)
    clock.now += 121
    budget.acquire()
    budget.release()


def test_budget_registry_is_per_tenant():
    assert budget_for("a") is budget_for("a")
    assert budget_for("a") is not budget_for("b")
    first = budget_for("a")
    reset_budgets()
    assert budget_for("a") is not first


# --- an overall deadline, not only a per-read timeout (SPEC A7) -----------------------------


def test_a_slow_drip_answer_is_cut_off_at_the_runs_reading_deadline(sleeps):
    # Given a client list that arrives one small piece at a time, each within the read timeout
    clock = {"left": 300.0}
    pieces = client_list_pieces(50)

    def drip() -> Iterator[bytes]:
        for piece in pieces:
            clock["left"] -= 10.0  # each piece takes ten seconds of the invocation
            yield piece

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(drip()))

    client = _client_answered_by(handler, sleeps, remaining_seconds=lambda: clock["left"])

    # When the run reads it, the records that came in time are handed out, then it stops
    received = uuids_read_until_too_slow(client)

    assert 20 <= len(received) < 50
    assert clock["left"] > 0, "the read stopped before the invocation's end, leaving time to checkpoint"


def test_a_status_line_and_headers_that_drip_are_cut_off_at_the_reading_deadline(sleeps):
    # Given an answer whose headers take 40 pieces of five seconds of the invocation each (the probe
    # of 2026-12-07: only the body was held to the deadline, so the headers could outlive the run)
    clock = {"left": 100.0}
    pieces = {"sent": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        for _ in range(40):
            time.sleep(0.05)
            clock["left"] -= 5.0
            pieces["sent"] += 1
        return httpx.Response(200, content=STAFF_XML)

    client = _client_answered_by(handler, sleeps, remaining_seconds=lambda: clock["left"])
    started = time.monotonic()

    stopped: dict[str, float] = {}

    def list_staff_noting_the_clock() -> None:
        try:
            client.list_staff()
        finally:
            # Read at once: the answer's thread goes on spending the clock after the client left
            # (a make test on a busy machine read it late, at 0).
            stopped["left"] = clock["left"]

    # When the run asks for the staff list, it stops waiting at the reading deadline
    with pytest.raises(XpmTooSlow):
        list_staff_noting_the_clock()

    assert time.monotonic() - started < 1.5, "it did not wait for the whole answer"
    assert stopped["left"] > 0, "time is left to record why"
    assert client.calls == 1


def test_an_answer_that_comes_after_the_caller_gave_up_is_closed(sleeps):
    closed = threading.Event()

    class Tracked(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield STAFF_XML

        def close(self) -> None:
            closed.set()

    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(1.5)  # past the one second a call gets once the reading deadline has passed
        return httpx.Response(200, stream=Tracked())

    client = _client_answered_by(handler, sleeps, remaining_seconds=lambda: 40.0)  # nothing left to read

    with pytest.raises(XpmTooSlow):
        client.list_staff()

    assert closed.wait(3), "the late answer's connection was left open"


def test_an_error_body_that_drips_is_read_only_until_the_reading_deadline(sleeps):
    # A 404 whose description trickles in: the status alone speaks once the time for reading is up.
    clock = {"left": 100.0}

    def trickle() -> Iterator[bytes]:
        for _ in range(40):
            time.sleep(0.05)
            clock["left"] -= 5.0
            yield b" "

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, stream=_Stream(trickle()))

    client = _client_answered_by(handler, sleeps, remaining_seconds=lambda: clock["left"])
    started = time.monotonic()

    with pytest.raises(XpmBadResponse, match="HTTP 404"):
        client.list_staff()

    assert time.monotonic() - started < 1.5
    assert clock["left"] > 0


def test_an_answer_still_flowing_at_the_reading_deadline_is_cut_off_there(sleeps):
    # The bytes come as fast as they are read, while the invocation's time runs out as the run
    # works through them: pieces already read ahead must not carry the run past its deadline.
    checks = {"left": 100.0}

    def remaining() -> float:
        time.sleep(0.002)  # the run's own work between two pieces: the reader keeps ahead
        checks["left"] -= 5.0  # every look at the clock costs the run five seconds
        return checks["left"]

    pieces = client_list_pieces(200)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(iter(pieces)))

    client = _client_answered_by(handler, sleeps, remaining_seconds=remaining)
    received = uuids_read_until_too_slow(client)

    assert len(received) < 20


def client_list_pieces(clients: int) -> list[bytes]:
    """A client list as the pieces a drip sends: the opening, then one client a piece."""
    return [b"<Response><Status>OK</Status><Clients>"] + [
        f"<Client><UUID>u{i}</UUID><Name>C{i}</Name></Client>".encode() for i in range(clients)
    ]


def uuids_read_until_too_slow(client: XpmApi) -> list[str]:
    """The clients handed out before the reading deadline stopped the list (XpmTooSlow)."""
    received: list[str] = []

    def read_all() -> None:
        for record in client.iter_clients():
            received.append(record.uuid)

    with pytest.raises(XpmTooSlow):
        read_all()
    return received


class _Stream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks


def test_unlimited_time_is_no_reading_deadline(sleeps):
    # A harness or the local stack gives the worker unlimited time (runtime.unlimited: infinity):
    # reading waits for an answer however long it takes, rather than failing on the infinite wait.
    def slowly() -> Iterator[bytes]:
        time.sleep(0.1)  # the reader waits on an empty hand-over
        yield STAFF_XML[:40]
        time.sleep(0.1)
        yield STAFF_XML[40:]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(slowly()))

    client = _client_answered_by(handler, sleeps, remaining_seconds=lambda: math.inf)

    assert [staff.name for staff in client.list_staff()] == ["Ann Lee"]


JWT_SHAPED = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "answer",
    [
        lambda request: httpx.Response(
            400, json={"Title": "Bad Request", "Detail": f"Header was {request.headers['authorization']}"}
        ),
        lambda request: httpx.Response(
            200, content=_xml_error(f"token {request.headers['authorization']} refused")
        ),
    ],
    ids=["gateway-json", "xml-error"],
)
def test_an_answer_echoing_the_bearer_token_never_puts_it_in_the_runs_log(
    sleeps: Sleeps, answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    # The probe of 2026-12-07 (night): the error's text became the run entry's message, stored in
    # the sync log and shown by the API; only the email masked it.
    api = _client_answered_by(answer, sleeps, tokens=StaticToken(JWT_SHAPED))

    with pytest.raises(XpmError) as caught:
        api.list_staff()

    assert JWT_SHAPED not in str(caught.value)
    assert "[redacted]" in str(caught.value)
