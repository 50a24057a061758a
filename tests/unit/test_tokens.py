"""A firm's tokens in Secrets Manager (SPEC A8, B2): refresh, rotation, re-read, reconnect.

Secrets Manager is moto's; Xero is the simulator over a real loopback socket. The test clock and
the simulator's clock move together, so "30 minutes later" means the same to both sides.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from moto import mock_aws
from xpm_sync.adapters import tokens as tokens_module
from xpm_sync.adapters.dynamodb import Table
from xpm_sync.adapters.tokens import (
    DELETION_WAITS,
    LOCK_KEY_PREFIX,
    LOCK_LEASE_SECONDS,
    REFRESH_BUDGET_SECONDS,
    REFRESH_MARGIN_SECONDS,
    SAVE_LEASE_WAIT_SECONDS,
    WRITE_RETRY_DELAYS,
    FirmDisconnected,
    FirmTokens,
    GrantNotSaved,
    NeedsReconnect,
    RefreshLock,
    StoredTokens,
    TokenStore,
    TokenStoreError,
)
from xpm_sync.adapters.xero_identity import (
    FALLBACK_EXPIRES_IN,
    IdentityUnreachable,
    TokenSet,
    XeroIdentity,
    XeroIdentityError,
)
from xpm_sync.observability import logger

from local.xpm_sim import generate_practice
from tests.fixtures.concurrency import race
from tests.fixtures.logs import powertools_json_log
from tests.fixtures.simulator import identity_answered_by, identity_on, running_simulator

CLIENT_ID = "app-client-id"
CLIENT_SECRET = "app-client-secret-value"
PREFIX = "xpm-sync/tokens/"
ACCESS_LIFETIME = 30 * 60


class SharedClock:
    """The test's clock; moving it moves the simulator's clock by the same amount."""

    def __init__(self, sim: Any) -> None:
        self.moment = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        self._sim = sim

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: int) -> None:
        self.moment += timedelta(seconds=seconds)
        self._sim.advance_time(seconds)


class FailingPuts:
    """A Secrets Manager client whose writes fail, to prove nothing unsaved is ever used."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.fail_puts = False

    def put_secret_value(self, **kwargs: Any) -> Any:
        if self.fail_puts:
            raise ClientError(
                {"Error": {"Code": "InternalServiceError", "Message": "boom"}}, "PutSecretValue"
            )
        return self._inner.put_secret_value(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def sim() -> Iterator[Any]:
    practice = generate_practice(1, staff=3, clients=3, problem_share=0)
    with running_simulator(CLIENT_ID, CLIENT_SECRET, practice) as simulator:
        yield simulator


@pytest.fixture
def clock(sim: Any) -> SharedClock:
    return SharedClock(sim)


@pytest.fixture
def secrets() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager")


@pytest.fixture
def identity(sim: Any, http: httpx.Client, clock: SharedClock) -> XeroIdentity:
    return identity_on(sim, http, clock, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)


@pytest.fixture
def store(secrets: Any, identity: XeroIdentity, clock: SharedClock) -> TokenStore:
    return TokenStore(secrets_client=secrets, prefix=PREFIX, identity=identity, clock=clock)


def issued(sim: Any, clock: SharedClock) -> TokenSet:
    answer = sim.issue_tokens(CLIENT_ID)
    return TokenSet(
        access_token=answer["access_token"],
        refresh_token=answer["refresh_token"],
        expires_at=int(clock.now().timestamp()) + int(answer["expires_in"]),
        id_token=answer.get("id_token"),
    )


def connected(store: TokenStore, sim: Any, clock: SharedClock, firm_id: str = "firm-1") -> TokenSet:
    tokens = issued(sim, clock)
    store.save(firm_id, tokens)
    return tokens


def a_firm_in_use(store: TokenStore, sim: Any, clock: SharedClock) -> FirmTokens:
    """A connected firm's tokens as a worker holds them once it has read the access token."""
    connected(store, sim, clock)
    firm = store.for_firm("firm-1")
    firm.access_token()
    return firm


def secret_json(secrets: Any, firm_id: str = "firm-1") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(secrets.get_secret_value(SecretId=f"{PREFIX}{firm_id}")["SecretString"])
    return data


def token_calls(sim: Any) -> int:
    return len(sim.calls_to("/connect/token"))


def works_at_xero(identity: XeroIdentity, access_token: str) -> bool:
    return len(identity.connections(access_token)) == 1


# --- the secret (SPEC B2) ---


def test_save_then_load_round_trips_the_spec_layout(store: TokenStore, secrets: Any, sim: Any, clock) -> None:
    tokens = connected(store, sim, clock)

    assert secret_json(secrets) == {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": tokens.expires_at,
    }
    assert store.load("firm-1") == StoredTokens(tokens.access_token, tokens.refresh_token, tokens.expires_at)


def test_rewriting_the_secret_keeps_keys_the_store_does_not_own(
    store: TokenStore, secrets: Any, sim: Any, clock: SharedClock
) -> None:
    tokens = connected(store, sim, clock)
    secrets.put_secret_value(
        SecretId=f"{PREFIX}firm-1", SecretString=json.dumps({**secret_json(secrets), "tenant_hint": "t-1"})
    )

    store.for_firm("firm-1").access_token(force_refresh=True)
    store.save("firm-1", issued(sim, clock))

    data = secret_json(secrets)
    assert data["tenant_hint"] == "t-1"
    assert data["refresh_token"] != tokens.refresh_token


def test_load_of_a_firm_without_a_secret_is_none(store: TokenStore) -> None:
    assert store.load("firm-none") is None


def test_delete_removes_the_secret_and_tolerates_a_missing_one(
    store: TokenStore, sim: Any, clock: SharedClock
) -> None:
    connected(store, sim, clock)

    store.delete("firm-1")
    store.delete("firm-1")

    assert store.load("firm-1") is None


def test_stored_tokens_repr_hides_the_tokens() -> None:
    text = repr(StoredTokens("access-value", "refresh-value", 123))

    assert "access-value" not in text
    assert "refresh-value" not in text


class DeniedReads:
    """A Secrets Manager client the function's role may not read from."""

    def get_secret_value(self, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetSecretValue")


def test_a_secret_that_cannot_be_read_is_a_store_error_not_a_reconnect(clock: SharedClock) -> None:
    store = TokenStore(secrets_client=DeniedReads(), prefix=PREFIX, identity=None, clock=clock)

    with pytest.raises(TokenStoreError, match="AccessDeniedException"):
        store.for_firm("firm-1").access_token()


def test_a_store_without_identity_can_save_and_load_but_not_refresh(
    secrets: Any, sim: Any, clock: SharedClock
) -> None:
    store = TokenStore(secrets_client=secrets, prefix=PREFIX, identity=None, clock=clock)
    tokens = connected(store, sim, clock)

    assert store.load("firm-1") == StoredTokens(tokens.access_token, tokens.refresh_token, tokens.expires_at)
    with pytest.raises(TypeError):
        store.for_firm("firm-1").access_token(force_refresh=True)


def test_an_identity_from_a_factory_is_built_at_the_first_refresh_and_only_once(
    secrets: Any, sim: Any, identity: XeroIdentity, clock: SharedClock
) -> None:
    built: list[XeroIdentity] = []

    def build() -> XeroIdentity:
        built.append(identity)
        return identity

    store = TokenStore(
        secrets_client=secrets, prefix=PREFIX, identity=None, identity_factory=build, clock=clock
    )
    tokens = connected(store, sim, clock)
    firm = store.for_firm("firm-1")

    assert firm.access_token() == tokens.access_token
    assert built == [], "a fresh access token needs no identity"
    clock.advance(ACCESS_LIFETIME)
    assert firm.access_token() != tokens.access_token
    clock.advance(ACCESS_LIFETIME)
    firm.access_token()
    assert firm.refreshed == 2
    assert len(built) == 1


# --- when to refresh (SPEC A8: 30-minute access tokens) ---


def test_a_token_with_time_left_is_used_without_refreshing(
    store: TokenStore, sim: Any, clock: SharedClock
) -> None:
    tokens = connected(store, sim, clock)
    before = token_calls(sim)
    clock.advance(ACCESS_LIFETIME - REFRESH_MARGIN_SECONDS - 1)
    firm = store.for_firm("firm-1")

    assert firm.access_token() == tokens.access_token
    assert firm.refreshed == 0
    assert token_calls(sim) == before


def test_a_token_with_under_two_minutes_left_is_refreshed(
    store: TokenStore, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    tokens = connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME - REFRESH_MARGIN_SECONDS + 1)
    firm = store.for_firm("firm-1")

    access_token = firm.access_token()

    assert access_token != tokens.access_token
    assert firm.refreshed == 1
    assert works_at_xero(identity, access_token)


def test_force_refresh_refreshes_a_token_with_time_left(
    store: TokenStore, sim: Any, clock: SharedClock
) -> None:
    tokens = connected(store, sim, clock)
    firm = store.for_firm("firm-1")

    assert firm.access_token(force_refresh=True) != tokens.access_token
    assert firm.refreshed == 1


def test_callers_refused_the_same_token_share_one_refresh(
    store: TokenStore, sim: Any, clock: SharedClock, identity: XeroIdentity
) -> None:
    # Two of a run's XPM calls met the same 401: the second must not spend another rotation.
    firm = a_firm_in_use(store, sim, clock)
    refused = firm.access_token()

    first = firm.access_token(refused=refused)
    second = firm.access_token(refused=refused)

    assert first == second != refused
    assert firm.refreshed == 1
    assert works_at_xero(identity, second)


def test_a_token_refused_moments_after_its_refresh_is_refreshed_again(
    store: TokenStore, sim: Any, clock: SharedClock, identity: XeroIdentity
) -> None:
    # Xero may end an access token early (a TokenExpired a minute into a run that has just
    # refreshed): the token's youth does not make the 401 wrong, and one more refresh fixes it.
    firm = a_firm_in_use(store, sim, clock)
    young = firm.access_token(force_refresh=True)
    sim.expire_access_tokens()

    replacement = firm.access_token(refused=young)

    assert replacement != young
    assert firm.refreshed == 2
    assert works_at_xero(identity, replacement)


def test_one_run_reads_the_secret_once(store: TokenStore, secrets: Any, sim: Any, clock: SharedClock) -> None:
    tokens = connected(store, sim, clock)
    firm = store.for_firm("firm-1")
    firm.access_token()
    secrets.put_secret_value(
        SecretId=f"{PREFIX}firm-1",
        SecretString=json.dumps({**secret_json(secrets), "access_token": "changed-behind-our-back"}),
    )

    assert firm.access_token() == tokens.access_token


# --- rotation is stored before use (SPEC A8) ---


def test_the_rotated_refresh_token_is_in_the_secret_when_the_access_token_is_returned(
    store: TokenStore, secrets: Any, sim: Any, clock: SharedClock
) -> None:
    tokens = connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME)

    access_token = store.for_firm("firm-1").access_token()

    data = secret_json(secrets)
    assert data["access_token"] == access_token
    assert data["refresh_token"] != tokens.refresh_token
    assert data["expires_at"] == int(clock.now().timestamp()) + ACCESS_LIFETIME
    assert store.load("firm-1") == StoredTokens(access_token, data["refresh_token"], data["expires_at"])


def test_a_failed_secret_write_returns_no_new_access_token(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    flaky = FailingPuts(secrets)
    pauses: list[float] = []
    store = TokenStore(
        secrets_client=flaky, prefix=PREFIX, identity=identity, clock=clock, sleep=pauses.append
    )
    tokens = connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    firm = store.for_firm("firm-1")
    flaky.fail_puts = True

    with pytest.raises(TokenStoreError):
        firm.access_token()

    assert secret_json(secrets)["refresh_token"] == tokens.refresh_token
    assert firm.refreshed == 0
    assert len(pauses) == len(WRITE_RETRY_DELAYS), "retried before giving up"
    # The refresh token on record is still honoured (the 30-minute grace), so the next try works.
    flaky.fail_puts = False
    assert firm.access_token() != tokens.access_token
    assert secret_json(secrets)["refresh_token"] != tokens.refresh_token


# --- storing the rotated token survives passing Secrets Manager errors (SPEC A8) ---


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutSecretValue",
    )


class ScriptedPuts:
    """A Secrets Manager client whose next puts raise the errors in ``errors``, in order.

    With ``landed``, each failing put is first made for real: the write reached Secrets Manager
    but its answer was lost.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.errors: list[Exception] = []
        self.landed = False
        self.puts: list[dict[str, Any]] = []
        self.creates = 0

    def put_secret_value(self, **kwargs: Any) -> Any:
        self.puts.append(kwargs)
        if self.errors:
            if self.landed:
                self._inner.put_secret_value(**kwargs)
            raise self.errors.pop(0)
        return self._inner.put_secret_value(**kwargs)

    def create_secret(self, **kwargs: Any) -> Any:
        self.creates += 1
        return self._inner.create_secret(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


TRANSIENT = {
    "throttled": lambda: client_error("ThrottlingException"),
    "internal": lambda: client_error("InternalServiceError", 500),
    "any-503": lambda: client_error("SomethingNew", 503),
    "429": lambda: client_error("TooManyRequests", 429),
    "no-endpoint": lambda: EndpointConnectionError(endpoint_url="https://secretsmanager.example"),
    "read-timeout": lambda: ReadTimeoutError(endpoint_url="https://secretsmanager.example"),
    "closed": lambda: ConnectionClosedError(endpoint_url="https://secretsmanager.example"),
}


def scripted_store(
    secrets: Any, identity: XeroIdentity, clock: SharedClock
) -> tuple[TokenStore, ScriptedPuts, list[float]]:
    scripted = ScriptedPuts(secrets)
    pauses: list[float] = []
    store = TokenStore(
        secrets_client=scripted, prefix=PREFIX, identity=identity, clock=clock, sleep=pauses.append
    )
    return store, scripted, pauses


@pytest.mark.parametrize("error", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_a_passing_error_storing_the_rotated_token_is_retried_in_process(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock, error: Any
) -> None:
    store, scripted, pauses = scripted_store(secrets, identity, clock)
    tokens = connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    scripted.errors = [error(), error()]
    firm = store.for_firm("firm-1")

    access_token = firm.access_token()

    assert works_at_xero(identity, access_token)
    assert secret_json(secrets)["access_token"] == access_token
    assert secret_json(secrets)["refresh_token"] != tokens.refresh_token
    assert firm.refreshed == 1
    assert token_calls(sim) == 1, "one rotation, stored on the third try"
    assert len(pauses) == 2
    assert all(0 < pause <= limit for pause, limit in zip(pauses, WRITE_RETRY_DELAYS, strict=False))


def test_a_write_that_keeps_failing_gives_up_within_a_few_seconds(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    store, scripted, pauses = scripted_store(secrets, identity, clock)
    tokens = connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    scripted.errors = [client_error("ThrottlingException") for _ in range(10)]
    scripted.puts.clear()

    with pytest.raises(TokenStoreError, match="ThrottlingException"):
        store.for_firm("firm-1").access_token()

    assert len(scripted.puts) == len(WRITE_RETRY_DELAYS) + 1
    assert 0 < sum(pauses) <= sum(WRITE_RETRY_DELAYS) <= 5
    assert secret_json(secrets)["refresh_token"] == tokens.refresh_token


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "EncryptionFailure", "LimitExceededException", "ValidationException"]
)
def test_an_error_that_will_not_pass_is_not_retried(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock, code: str
) -> None:
    store, scripted, pauses = scripted_store(secrets, identity, clock)
    connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    scripted.errors = [client_error(code)]
    scripted.puts.clear()

    with pytest.raises(TokenStoreError, match=code):
        store.for_firm("firm-1").access_token()

    assert len(scripted.puts) == 1
    assert pauses == []


def test_a_retried_write_that_had_landed_adds_no_second_version(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    store, scripted, _ = scripted_store(secrets, identity, clock)
    connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    scripted.errors = [ReadTimeoutError(endpoint_url="https://sm.example")]
    scripted.landed = True
    scripted.puts.clear()
    versions = len(secrets.list_secret_version_ids(SecretId=f"{PREFIX}firm-1")["Versions"])

    access_token = store.for_firm("firm-1").access_token()

    assert len(scripted.puts) == 2
    assert scripted.puts[0]["ClientRequestToken"] == scripted.puts[1]["ClientRequestToken"]
    assert len(secrets.list_secret_version_ids(SecretId=f"{PREFIX}firm-1")["Versions"]) == versions + 1
    assert secret_json(secrets)["access_token"] == access_token


# --- a disconnect during a run: the refresh never brings the secret back ---


def test_a_refresh_after_the_secret_was_deleted_does_not_recreate_it(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    store, scripted, pauses = scripted_store(secrets, identity, clock)
    firm = a_firm_in_use(store, sim, clock)
    creates = scripted.creates
    store.delete("firm-1")  # disconnect, while Xero still honours the grant
    clock.advance(ACCESS_LIFETIME)

    with pytest.raises(FirmDisconnected):
        firm.access_token()

    assert store.load("firm-1") is None
    assert scripted.creates == creates
    assert pauses == []
    assert firm.refreshed == 0


def test_a_refresh_after_the_secret_was_marked_for_deletion_is_a_disconnect(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    # moto lets a put through on a secret marked for deletion; Secrets Manager answers this.
    store, scripted, pauses = scripted_store(secrets, identity, clock)
    connected(store, sim, clock)
    creates = scripted.creates
    clock.advance(ACCESS_LIFETIME)
    scripted.errors = [client_error("InvalidRequestException")]
    scripted.puts.clear()

    with pytest.raises(FirmDisconnected):
        store.for_firm("firm-1").access_token()

    assert scripted.creates == creates
    assert len(scripted.puts) == 1
    assert pauses == []


def test_a_disconnect_seen_after_invalid_grant_is_a_disconnect(
    store: TokenStore, secrets: Any, sim: Any, clock: SharedClock
) -> None:
    firm = a_firm_in_use(store, sim, clock)
    # What a disconnect does: revoke at Xero, then delete the secret.
    sim.revoke_all()
    store.delete("firm-1")

    with pytest.raises(FirmDisconnected):
        firm.access_token(force_refresh=True)

    assert store.load("firm-1") is None


def test_a_firm_disconnected_is_still_a_needs_reconnect_for_callers_that_do_not_tell_them_apart() -> None:
    assert issubclass(FirmDisconnected, NeedsReconnect)


def test_the_callback_still_creates_the_secret_of_a_new_connection(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    store, scripted, _ = scripted_store(secrets, identity, clock)

    tokens = connected(store, sim, clock, firm_id="firm-new")

    assert scripted.creates == 1
    assert secret_json(secrets, "firm-new")["refresh_token"] == tokens.refresh_token


class DeletingSecrets:
    """Secrets Manager deleting a secret in the background, as it does after ``DeleteSecret`` with
    ``ForceDeleteWithoutRecovery`` (moto deletes at once): the name answers InvalidRequestException
    ("marked for deletion") to the next ``calls_until_gone`` calls on it."""

    def __init__(self, inner: Any, calls_until_gone: int) -> None:
        self._inner = inner
        self._left = 0
        self._calls_until_gone = calls_until_gone
        self.refused: list[str] = []

    def delete_secret(self, **kwargs: Any) -> Any:
        self._deleting("DeleteSecret")  # already on its way out: "currently marked deleted"
        self._left = self._calls_until_gone
        return self._inner.delete_secret(**kwargs)

    def _deleting(self, operation: str) -> None:
        if self._left > 0:
            self._left -= 1
            self.refused.append(operation)
            raise client_error("InvalidRequestException")

    def get_secret_value(self, **kwargs: Any) -> Any:
        self._deleting("GetSecretValue")
        return self._inner.get_secret_value(**kwargs)

    def put_secret_value(self, **kwargs: Any) -> Any:
        self._deleting("PutSecretValue")
        return self._inner.put_secret_value(**kwargs)

    def create_secret(self, **kwargs: Any) -> Any:
        self._deleting("CreateSecret")
        return self._inner.create_secret(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _disconnected_while_deleting(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock, *, calls_until_gone: int
) -> tuple[TokenStore, DeletingSecrets, list[float]]:
    """A firm connected, then disconnected: its secret on its way out for ``calls_until_gone``
    calls; the store, the Secrets Manager it talks to, and the pauses it would have slept."""
    deleting = DeletingSecrets(secrets, calls_until_gone=calls_until_gone)
    pauses: list[float] = []
    store = TokenStore(
        secrets_client=deleting, prefix=PREFIX, identity=identity, clock=clock, sleep=pauses.append
    )
    connected(store, sim, clock)
    store.delete("firm-1")
    return store, deleting, pauses


def test_a_reconnect_right_after_a_disconnect_waits_for_the_old_secret_to_be_gone(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    # The probe of 2026-12-07 (night): the callback read the secret still being deleted, answered
    # 500 and revoked the grant Xero had just issued: the admin's consent was lost.
    store, deleting, pauses = _disconnected_while_deleting(secrets, identity, sim, clock, calls_until_gone=4)

    again = issued(sim, clock)
    replaced = store.save("firm-1", again)

    assert replaced is None, "the secret on its way out is no grant to revoke"
    assert deleting.refused == ["GetSecretValue", "PutSecretValue", "PutSecretValue", "PutSecretValue"]
    assert pauses == list(DELETION_WAITS[:3])
    assert secret_json(secrets, "firm-1")["refresh_token"] == again.refresh_token


def test_a_second_disconnect_while_the_secret_is_being_deleted_is_no_error(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    # The review of 2026-12-07 (night): a double click on Disconnect answered 500
    store, deleting, _ = _disconnected_while_deleting(secrets, identity, sim, clock, calls_until_gone=4)

    assert store.load("firm-1") is None
    store.delete("firm-1")

    assert deleting.refused == ["GetSecretValue", "DeleteSecret"]


def test_a_secret_whose_deletion_never_ends_is_a_store_error_after_a_few_seconds(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    store, _, pauses = _disconnected_while_deleting(secrets, identity, sim, clock, calls_until_gone=100)

    with pytest.raises(GrantNotSaved) as refused:
        store.save("firm-1", issued(sim, clock))

    assert "InvalidRequestException" in str(refused.value.__cause__)
    assert pauses == list(DELETION_WAITS)
    assert sum(pauses) <= 5


# --- a token answer without a usable expires_in (SPEC A8) ---


def test_a_refresh_answer_without_expires_in_still_stores_the_rotated_token(secrets: Any) -> None:
    class Clock:
        moment = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

        def now(self) -> datetime:
            return self.moment

    clock = Clock()
    issued_tokens: list[str] = []

    def xero(request: httpx.Request) -> httpx.Response:
        issued_tokens.append(f"rt-{len(issued_tokens) + 1}")
        return httpx.Response(200, json={"access_token": "at-new", "refresh_token": issued_tokens[-1]})

    identity = identity_answered_by(xero, clock, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    store = TokenStore(secrets_client=secrets, prefix=PREFIX, identity=identity, clock=clock)
    now = int(clock.now().timestamp())
    store.save("firm-1", TokenSet("at-old", "rt-old", now - 60))
    firm = store.for_firm("firm-1")

    assert firm.access_token() == "at-new"
    assert secret_json(secrets) == {
        "access_token": "at-new",
        "refresh_token": "rt-1",
        "expires_at": now + FALLBACK_EXPIRES_IN,
    }
    # Used as is until the assumed lifetime is nearly over, then refreshed (not on every call).
    assert firm.access_token() == "at-new"
    clock.moment += timedelta(seconds=FALLBACK_EXPIRES_IN - REFRESH_MARGIN_SECONDS + 1)
    firm.access_token()
    assert issued_tokens == ["rt-1", "rt-2"]
    assert secret_json(secrets)["refresh_token"] == "rt-2"


# --- invalid_grant: re-read once, then reconnect (SPEC A8) ---


def test_a_token_rotated_by_another_worker_is_picked_up_after_invalid_grant(
    store: TokenStore, secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    ours = a_firm_in_use(store, sim, clock)
    theirs = store.for_firm("firm-1")
    theirs.access_token(force_refresh=True)
    # Past the old refresh token's grace and past the other worker's access token too.
    clock.advance(ACCESS_LIFETIME + 60)
    calls = token_calls(sim)

    access_token = ours.access_token()

    # One refused refresh with the stale token, one with the token re-read from the secret.
    assert token_calls(sim) == calls + 2
    assert works_at_xero(identity, access_token)
    assert secret_json(secrets)["access_token"] == access_token
    assert ours.refreshed == 1


def test_a_still_valid_access_token_from_another_worker_is_used_as_is(
    store: TokenStore, secrets: Any, sim: Any, clock: SharedClock
) -> None:
    ours = a_firm_in_use(store, sim, clock)
    theirs = store.for_firm("firm-1")
    their_token = theirs.access_token(force_refresh=True)
    sim.faults.add("invalid_grant", times=1)
    calls = token_calls(sim)

    assert ours.access_token(force_refresh=True) == their_token
    assert token_calls(sim) == calls + 1
    assert ours.refreshed == 0


# --- a refresh whose answer never came (SPEC A8: the old token works 30 more minutes) ---


def store_noting_pauses(
    secrets: Any, identity: XeroIdentity, clock: SharedClock
) -> tuple[TokenStore, list[float]]:
    """A store whose pauses between attempts are noted, not slept."""
    pauses: list[float] = []
    store = TokenStore(
        secrets_client=secrets, prefix=PREFIX, identity=identity, clock=clock, sleep=pauses.append
    )
    return store, pauses


def test_a_refresh_whose_answer_was_lost_is_asked_again_at_once_and_the_grant_lives(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    # Given Xero rotates the grant on the refresh, but its answer never arrives (the probe of
    # 2026-12-07: SQS tried again only after 90 minutes, when the old token was no longer honoured)
    store, pauses = store_noting_pauses(secrets, identity, clock)
    connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    sim.faults.add("lose_answer", times=1)

    access_token = store.for_firm("firm-1").access_token()

    # Then the refresh is asked again at once, with the same token, and the new grant is stored
    assert token_calls(sim) == 2
    assert len(pauses) == 1
    assert 0.5 <= pauses[0] <= 1.0
    assert works_at_xero(identity, access_token)
    assert secret_json(secrets)["access_token"] == access_token
    clock.advance(ACCESS_LIFETIME)
    assert works_at_xero(identity, store.for_firm("firm-1").access_token())


def test_a_refresh_xero_never_answers_is_given_up_within_seconds_and_the_grant_is_kept(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    store, pauses = store_noting_pauses(secrets, identity, clock)
    tokens = connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    sim.faults.add("unavailable", times=None, path="/connect/token")

    with pytest.raises(XeroIdentityError):
        store.for_firm("firm-1").access_token()

    assert token_calls(sim) == 3
    assert sum(pauses) <= 4.0
    assert secret_json(secrets)["refresh_token"] == tokens.refresh_token


def test_refresh_attempts_a_timeout_included_all_end_within_the_leases_budget(
    secrets: Any, clock: SharedClock
) -> None:
    # Each attempt times out after its whole read timeout (the review of 2026-12-07: a timed-out
    # attempt was never asked again, and a late retry could outlast the 30-second lease)
    now = {"seconds": 0.0}
    timeouts: list[float] = []

    class XeroTimingOut:
        def refresh(self, refresh_token: str, *, timeout: float | None = None) -> TokenSet:
            assert timeout is not None
            timeouts.append(timeout)
            now["seconds"] += timeout
            raise IdentityUnreachable("Xero token request failed: ReadTimeout")

    def sleep(seconds: float) -> None:
        now["seconds"] += seconds

    store = TokenStore(
        secrets_client=secrets,
        prefix=PREFIX,
        identity=XeroTimingOut(),  # type: ignore[arg-type]
        clock=clock,
        sleep=sleep,
        monotonic=lambda: now["seconds"],
    )
    stale = {"access_token": "a", "refresh_token": "r", "expires_at": 0}
    secrets.create_secret(Name=f"{PREFIX}firm-1", SecretString=json.dumps(stale))

    with pytest.raises(IdentityUnreachable):
        store.for_firm("firm-1").access_token()

    assert len(timeouts) == 2, "a timed-out refresh is asked again, in what the budget leaves"
    assert timeouts[0] == 15.0
    assert 3.0 <= timeouts[1] <= 4.5
    assert now["seconds"] <= REFRESH_BUDGET_SECONDS < LOCK_LEASE_SECONDS


def test_a_refused_refresh_is_not_asked_again(store: TokenStore, sim: Any, clock: SharedClock) -> None:
    connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    sim.faults.add("invalid_grant", times=None)

    with pytest.raises(NeedsReconnect):
        store.for_firm("firm-1").access_token()

    assert token_calls(sim) == 1


def test_a_revoked_grant_needs_reconnect(store: TokenStore, sim: Any, clock: SharedClock) -> None:
    connected(store, sim, clock)
    sim.revoke_all()
    clock.advance(ACCESS_LIFETIME)

    with pytest.raises(NeedsReconnect):
        store.for_firm("firm-1").access_token()


def test_a_revoked_grant_needs_reconnect_even_on_a_forced_refresh(
    store: TokenStore, sim: Any, clock: SharedClock
) -> None:
    connected(store, sim, clock)
    sim.revoke_all()

    with pytest.raises(NeedsReconnect):
        store.for_firm("firm-1").access_token(force_refresh=True)


def test_a_refresh_token_unused_for_60_days_needs_reconnect(
    store: TokenStore, sim: Any, clock: SharedClock
) -> None:
    connected(store, sim, clock)
    clock.advance(61 * 24 * 3600)

    with pytest.raises(NeedsReconnect):
        store.for_firm("firm-1").access_token()


def test_a_firm_without_a_secret_needs_reconnect(store: TokenStore) -> None:
    with pytest.raises(NeedsReconnect):
        store.for_firm("firm-missing").access_token()


def test_a_secret_deleted_mid_run_needs_reconnect(store: TokenStore, sim: Any, clock: SharedClock) -> None:
    firm = a_firm_in_use(store, sim, clock)
    store.delete("firm-1")
    sim.revoke_all()

    with pytest.raises(NeedsReconnect):
        firm.access_token(force_refresh=True)


def test_an_unusable_secret_needs_reconnect(store: TokenStore, secrets: Any) -> None:
    secrets.create_secret(Name=f"{PREFIX}firm-1", SecretString=json.dumps({"access_token": "a"}))

    with pytest.raises(NeedsReconnect):
        store.for_firm("firm-1").access_token()


# --- concurrency ---


def test_two_workers_refreshing_at_once_both_end_with_a_valid_token(
    store: TokenStore, identity: XeroIdentity, sim: Any, clock: SharedClock
) -> None:
    connected(store, sim, clock)
    workers = [store.for_firm("firm-1"), store.for_firm("firm-1")]
    for worker in workers:
        worker.access_token()
    clock.advance(ACCESS_LIFETIME)

    results, errors = race([worker.access_token for worker in workers])

    assert errors == []
    assert len(results) == 2
    assert all(works_at_xero(identity, token) for token in results)
    # Whatever the secret ended with still refreshes: the next run is not locked out.
    assert works_at_xero(identity, store.for_firm("firm-1").access_token(force_refresh=True))


def test_threads_sharing_one_run_share_one_refresh(store: TokenStore, sim: Any, clock: SharedClock) -> None:
    connected(store, sim, clock)
    firm = store.for_firm("firm-1")
    clock.advance(ACCESS_LIFETIME)
    start = threading.Barrier(5)
    results: list[str] = []

    def run() -> None:
        start.wait()
        results.append(firm.access_token())

    threads = [threading.Thread(target=run) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(set(results)) == 1
    assert len(results) == 5
    assert firm.refreshed == 1


# --- tokens never logged (SPEC A8, ARCHITECTURE rules) ---


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the Powertools logger writes as JSON."""
    with powertools_json_log() as stream:
        yield stream


def test_no_token_reaches_a_log_line_or_an_exception_message(
    store: TokenStore,
    secrets: Any,
    sim: Any,
    clock: SharedClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    json_log: io.StringIO,
) -> None:
    # INFO everywhere, as in Lambda; botocore's DEBUG wire dumps are its own and off in production.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger=logger.name)
    seen: set[str] = set()
    first = connected(store, sim, clock)
    seen |= {first.access_token, first.refresh_token}
    ours = store.for_firm("firm-1")
    ours.access_token()
    theirs = store.for_firm("firm-1")
    theirs.access_token(force_refresh=True)
    clock.advance(ACCESS_LIFETIME + 60)
    ours.access_token()
    seen |= {secret_json(secrets)["access_token"], secret_json(secrets)["refresh_token"]}
    sim.revoke_all()
    clock.advance(ACCESS_LIFETIME)
    with pytest.raises(NeedsReconnect) as caught:
        ours.access_token()

    out, err = capsys.readouterr()
    records = "\n".join(repr(record.__dict__) for record in caplog.records)
    logged = "\n".join([caplog.text, records, out, err, json_log.getvalue()])
    assert "refreshed tokens for firm" in json_log.getvalue()
    for token in seen:
        assert token not in logged
        assert token not in str(caught.value)
        assert token not in repr(caught.value)


@pytest.mark.parametrize("expires_at", [None, "soon", "2020-01-01T00:00:00Z", True])
def test_a_secret_with_a_refresh_token_but_no_usable_expiry_refreshes_instead_of_reconnecting(
    store: TokenStore, secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock, expires_at: Any
) -> None:
    tokens = issued(sim, clock)
    stored: dict[str, Any] = {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token}
    if expires_at is not None:
        stored["expires_at"] = expires_at
    secrets.create_secret(Name=f"{PREFIX}firm-odd", SecretString=json.dumps(stored))

    access_token = store.for_firm("firm-odd").access_token()

    assert works_at_xero(identity, access_token)
    assert secret_json(secrets, "firm-odd")["refresh_token"] != tokens.refresh_token


# --- one writer per firm (SPEC A8): the refresh lease in the Config table ---


@pytest.fixture
def lease_table(secrets: Any) -> Any:
    """A Config table as template.yaml defines it (key firm_id), in the same moto."""
    dynamodb = boto3.client("dynamodb", region_name="ap-southeast-2")
    dynamodb.create_table(
        TableName="config",
        KeySchema=[{"AttributeName": "firm_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "firm_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return Table(dynamodb, "config")


def _locked_store(secrets: Any, identity: XeroIdentity, clock: SharedClock, table: Any) -> TokenStore:
    return TokenStore(
        secrets_client=secrets, prefix=PREFIX, identity=identity, clock=clock, lock=RefreshLock(table, clock)
    )


def test_a_function_that_finds_the_tokens_refreshed_under_the_lease_uses_them(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock, lease_table: Any
) -> None:
    # The worker's run read the secret, then the API refreshed the firm (tenants, say) before the
    # run needed a refresh of its own. Under the lease the run reads the secret again.
    # (Two threads racing for the lease would rest on moto's conditional put being atomic, which
    # moto does not promise; DynamoDB does. The lease's exclusion is tested below.)
    worker, api = (_locked_store(secrets, identity, clock, lease_table) for _ in range(2))
    connected(worker, sim, clock)
    run = worker.for_firm("firm-1")
    run.access_token()
    clock.advance(ACCESS_LIFETIME)
    sim.reset_calls()

    from_api = api.for_firm("firm-1").access_token()
    from_run = run.access_token()

    assert token_calls(sim) == 1, "one writer: the run found the API's tokens"
    assert from_run == from_api
    assert works_at_xero(identity, from_run)
    assert "Item" not in lease_table.get_item(Key={"firm_id": f"{LOCK_KEY_PREFIX}firm-1"})


def test_a_reconnect_landing_during_a_refresh_of_the_old_grant_is_never_overwritten_by_it(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock, lease_table: Any
) -> None:
    # Given a run refreshing the firm's grant, and the admin's reconnect storing a new grant while
    # Xero is answering that refresh (the probe of 2026-12-07: the run then wrote its rotated old
    # grant over the new one, which the reconnect had just revoked as the one it replaced)
    run_store, callback_store = (_locked_store(secrets, identity, clock, lease_table) for _ in range(2))
    first = connected(run_store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    refreshing, reconnecting = threading.Event(), threading.Event()
    original_refresh = identity.refresh

    def slow_refresh(refresh_token: str, **options: Any) -> TokenSet:
        refreshing.set()
        assert reconnecting.wait(5)
        time.sleep(0.3)  # the reconnect is waiting for the lease meanwhile
        return original_refresh(refresh_token, **options)

    identity.refresh = slow_refresh  # type: ignore[method-assign]
    new_grant = issued(sim, clock)
    replaced: list[StoredTokens | None] = []

    def reconnect() -> None:
        assert refreshing.wait(5)
        reconnecting.set()
        replaced.append(callback_store.save("firm-1", new_grant))

    callback = threading.Thread(target=reconnect)
    callback.start()
    run_store.for_firm("firm-1").access_token()
    callback.join(10)

    # Then the new grant is what the secret holds, and what it replaced is the run's rotated grant
    # (the one the callback revokes), not the token the run started from
    assert secret_json(secrets)["refresh_token"] == new_grant.refresh_token
    rotated = replaced[0]
    assert rotated is not None
    assert rotated.refresh_token not in (new_grant.refresh_token, first.refresh_token)
    assert token_calls(sim) == 1


def test_a_reconnect_that_could_not_wait_for_the_lease_is_still_never_overwritten(
    secrets: Any,
    identity: XeroIdentity,
    sim: Any,
    clock: SharedClock,
    lease_table: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given Xero answering the run's refresh more slowly than the callback waits for the lease
    # (the review of 2026-12-07): the reconnect stores its grant without the lease meanwhile
    monkeypatch.setattr(tokens_module, "SAVE_LEASE_WAIT_SECONDS", 0.05)
    run_store, callback_store = (_locked_store(secrets, identity, clock, lease_table) for _ in range(2))
    first = connected(run_store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    new_grant = issued(sim, clock)
    original_refresh = identity.refresh
    replaced: list[StoredTokens | None] = []

    def refresh_while_the_admin_reconnects(refresh_token: str, **options: Any) -> TokenSet:
        answer = original_refresh(refresh_token, **options)  # rotated at Xero: R0 -> R1
        saving = threading.Thread(target=lambda: replaced.append(callback_store.save("firm-1", new_grant)))
        saving.start()
        saving.join(5)
        return answer

    identity.refresh = refresh_while_the_admin_reconnects  # type: ignore[method-assign]
    access_token = run_store.for_firm("firm-1").access_token()
    identity.refresh = original_refresh  # type: ignore[method-assign]

    # Then the run takes up the new grant rather than writing the old one's tokens over it
    assert [grant.refresh_token if grant else None for grant in replaced] == [first.refresh_token]
    assert secret_json(secrets)["refresh_token"] == new_grant.refresh_token
    assert access_token == new_grant.access_token


def test_a_lease_left_by_a_function_that_died_is_taken_once_it_runs_out(
    secrets: Any, identity: XeroIdentity, sim: Any, clock: SharedClock, lease_table: Any
) -> None:
    store = _locked_store(secrets, identity, clock, lease_table)
    connected(store, sim, clock)
    clock.advance(ACCESS_LIFETIME)
    now = int(clock.now().timestamp())
    lease_table.put_item(Item={"firm_id": f"{LOCK_KEY_PREFIX}firm-1", "owner": "gone", "expires_at": now - 1})

    assert works_at_xero(identity, store.for_firm("firm-1").access_token())


def test_a_new_grant_waits_for_the_lease_only_so_long_then_is_stored_without_it(
    secrets: Any, sim: Any, clock: SharedClock, lease_table: Any
) -> None:
    # The callback answers behind API Gateway's 29-second limit: a lease that does not come
    # within SAVE_LEASE_WAIT_SECONDS (its holder most likely died) does not cost the admin the grant.
    now = int(clock.now().timestamp())
    lease = {"firm_id": f"{LOCK_KEY_PREFIX}firm-1", "owner": "other", "expires_at": now + LOCK_LEASE_SECONDS}
    lease_table.put_item(Item=lease)
    ticks = iter(range(1000))
    lock = RefreshLock(lease_table, clock, sleep=lambda _: None, monotonic=lambda: float(next(ticks)))
    store = TokenStore(secrets_client=secrets, prefix=PREFIX, identity=None, clock=clock, lock=lock)
    tokens = issued(sim, clock)

    assert store.save("firm-1", tokens) is None

    assert secret_json(secrets)["refresh_token"] == tokens.refresh_token
    assert next(ticks) <= SAVE_LEASE_WAIT_SECONDS + 2, "it gave up waiting after SAVE_LEASE_WAIT_SECONDS"


def test_a_lease_held_is_waited_for_and_never_taken_from_its_holder(
    clock: SharedClock, lease_table: Any
) -> None:
    now = int(clock.now().timestamp())
    lease = {"firm_id": f"{LOCK_KEY_PREFIX}firm-1", "owner": "other", "expires_at": now + LOCK_LEASE_SECONDS}
    lease_table.put_item(Item=lease)
    waits: list[float] = []
    ticks = iter(range(1000))
    lock = RefreshLock(lease_table, clock, sleep=waits.append, monotonic=lambda: float(next(ticks)))

    with pytest.raises(TokenStoreError), lock.held("firm-1"):
        pass

    assert waits, "it waited before giving up"
    assert lease_table.get_item(Key={"firm_id": lease["firm_id"]})["Item"] == lease
