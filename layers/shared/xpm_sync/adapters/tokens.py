"""A firm's Xero tokens in Secrets Manager (SPEC A8, B2), refreshed and rotated safely.

Every refresh returns a new refresh token and Xero honours the old one for only 30 more minutes,
so the rotated token is written to the secret before the new access token is handed out: a crash
between the two then costs nothing. A refresh refused with ``invalid_grant`` may just mean another
worker rotated the token first, so the secret is read again once before the firm is told to
reconnect. Token values are never logged nor put in exception messages.

A refresh whose answer never came (a timeout, a dropped connection, a 5xx) is asked again at once,
with the same refresh token: Xero may have rotated the grant and honours the old token for 30
minutes only. The write after a refresh is retried in-process on errors that pass (throttling, 5xx, a dropped
connection): a failed run is retried by SQS only after the queue's visibility timeout, long after
the old refresh token's 30 minutes, so losing that write costs the firm a reconnect. That write
only ever updates the secret: a disconnect deletes it while a run may be refreshing, and the run
must not bring it back.

One writer per firm (SPEC A8): the worker and the API functions may both need a refresh at once,
so a refresh holds a short lease in the Config table (``RefreshLock``) and reads the secret again
under it; whoever waited finds the tokens the other stored and uses them instead of refreshing.

Every grant stored and every refresh is noted in the firm's config (``tokens_refreshed_at``), so the
hourly schedule can tell a connection left idle and refresh it before Xero drops it (SPEC A6).
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.dynamodb import Table, is_condition_failure
from xpm_sync.adapters.xero_identity import IdentityUnreachable, InvalidGrant, TokenSet, XeroIdentity
from xpm_sync.domain.clock import Clock
from xpm_sync.observability import logger

# Refresh when less than this is left, so a token never expires in the middle of an XPM call
# (large client lists take a while to stream) and small clock skew does not matter.
REFRESH_MARGIN_SECONDS = 120

_TOKEN_KEYS = ("access_token", "refresh_token", "expires_at")

# Pauses between attempts at storing a rotated refresh token (each jittered down to half): five
# attempts within about 4 seconds of sleep, on top of botocore's own retries of each attempt.
WRITE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)

# Pauses before asking for a refresh again when Xero's answer did not come (each jittered down to
# half). Xero may have rotated the grant all the same and honours the old refresh token for only
# 30 minutes, while SQS would deliver the run again only after the queue's visibility timeout
# (90 minutes): asked again now, with the same token, the grant survives a lost answer.
REFRESH_RETRY_DELAYS = (1.0, 3.0)
# Every attempt at a refresh, pauses included, ends within this much of the first: the refresh
# lease (30 s) must also cover reading the secret before and storing the tokens after (with its
# retries, about 4 s), or a second function could take the lease and refresh at the same time.
REFRESH_BUDGET_SECONDS = 20.0
# The least time worth a new attempt (one read of Xero's answer).
REFRESH_ATTEMPT_MIN_SECONDS = 3.0
# One attempt's read timeout, the identity client's own.
REFRESH_ATTEMPT_MAX_SECONDS = 15.0

# Secrets Manager error codes that say "try again": throttling and the service's own failures.
# Any 5xx or 429 answer counts too, whatever its code.
_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "InternalServiceError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

# The secret does not exist, or (InvalidRequestException) is marked for deletion.
_GONE_CODES = frozenset({"ResourceNotFoundException", "InvalidRequestException"})
# Secrets Manager deletes a secret in the background: until it has, its name answers
# InvalidRequestException, and AWS advises backing off before creating a secret of the same name
# again. A reconnect right after a Disconnect meets it; these pauses (5 s in all) outlast it.
DELETION_WAITS = (0.5, 1.0, 1.5, 2.0)


# The refresh lease: long enough for a refresh and the secret's write (with its retries), short
# enough that a holder that died is not waited on for long. A waiter gives up after the lease.
LOCK_KEY_PREFIX = "TOKENLOCK#"
LOCK_LEASE_SECONDS = 30
LOCK_POLL_SECONDS = 0.2
# A new grant (the callback, behind API Gateway's 29-second limit) waits this long for the lease.
SAVE_LEASE_WAIT_SECONDS = 10.0


class GrantNotSaved(Exception):
    """``TokenStore.save`` failed once the new grant's write began. ``stored``: the secret holds
    the new grant (True: what describes it, ``then``, failed; None: the write failed, perhaps after
    it landed, its answer lost). ``replaced``: the grant it replaced, or would have."""

    def __init__(self, replaced: StoredTokens | None, *, stored: bool | None) -> None:
        super().__init__(
            "the new grant was stored but not described" if stored else "the new grant's write failed"
        )
        self.replaced = replaced
        self.stored = stored


class NeedsReconnect(Exception):
    """The firm must connect to Xero again: no stored tokens, or the refresh token is dead."""


class FirmDisconnected(NeedsReconnect):
    """The firm's token secret was deleted (or marked for deletion) while a run was using it.

    That is a disconnect happening during the run: the run should stop without telling the firm
    anything, and the firm's status is the disconnect's to set. A ``NeedsReconnect``, so a caller
    that does not tell the two apart still stops instead of retrying.
    """


class TokenStoreError(Exception):
    """Secrets Manager failed to read or write a firm's tokens (names the secret, never a token)."""


@dataclass(frozen=True)
class StoredTokens:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: int


@dataclass(frozen=True)
class _Secret:
    """The stored tokens plus whatever else the secret holds, kept when the secret is rewritten."""

    tokens: StoredTokens
    extra: dict[str, Any]


class TokenStore:
    def __init__(
        self,
        *,
        secrets_client: Any,
        prefix: str,
        identity: XeroIdentity | None,
        clock: Clock,
        sleep: Callable[[float], None] = time.sleep,
        lock: RefreshLock | None = None,
        identity_factory: Callable[[], XeroIdentity] | None = None,
        configs: ConfigRepository | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self._secrets = secrets_client
        self._prefix = prefix
        self._identity = identity
        self._identity_factory = identity_factory
        self._clock = clock
        self._sleep = sleep
        self._lock = lock
        self._configs = configs

    def secret_id(self, firm_id: str) -> str:
        return f"{self._prefix}{firm_id}"

    def save(
        self, firm_id: str, tokens: TokenSet, *, then: Callable[[], None] | None = None
    ) -> StoredTokens | None:
        """Store a new grant (after connect), keeping any other keys the secret already holds; the
        tokens it replaces are returned (None if the firm had none), for the caller to revoke.

        Under the refresh lease: a refresh of the old grant running meanwhile either ends first
        (and the tokens it rotated are the ones replaced) or starts after and finds the new grant,
        so it can never write the old grant over the new one. ``then`` runs under the same lease,
        after the write: what describes the grant (the firm's config) is written by the connect
        that stored it, never by one whose grant another connect (or a Disconnect) replaced.
        """
        with self._leased(firm_id, wait_seconds=SAVE_LEASE_WAIT_SECONDS):
            current = self._read(firm_id)
            try:
                self._write(
                    firm_id,
                    StoredTokens(tokens.access_token, tokens.refresh_token, tokens.expires_at),
                    current.extra if current else {},
                )
            except Exception as exc:
                raise GrantNotSaved(current.tokens if current else None, stored=None) from exc
            if then is not None:
                try:
                    then()
                except Exception as exc:
                    raise GrantNotSaved(current.tokens if current else None, stored=True) from exc
        self._note_refreshed(firm_id)
        return current.tokens if current else None

    @contextmanager
    def exclusive(self, firm_id: str) -> Iterator[None]:
        """The firm's grant held against refreshes and connects while it is ended (Disconnect)."""
        with self._leased(firm_id, wait_seconds=SAVE_LEASE_WAIT_SECONDS):
            yield

    @contextmanager
    def _leased(self, firm_id: str, *, wait_seconds: float) -> Iterator[None]:
        """The refresh lease if it comes within ``wait_seconds``; else on without it (a holder that
        slow has most likely died, and its lease runs out anyway), said in the log."""
        with ExitStack() as lease:
            if self._lock is not None:
                try:
                    lease.enter_context(self._lock.held(firm_id, wait_seconds=wait_seconds))
                except (TokenStoreError, ClientError, BotocoreConnectionError, HTTPClientError):
                    logger.warning(
                        "token refresh lease not free; storing without it", extra={"firm_id": firm_id}
                    )
            yield

    def load(self, firm_id: str) -> StoredTokens | None:
        secret = self._read(firm_id)
        return secret.tokens if secret else None

    def delete(self, firm_id: str) -> None:
        try:
            self._secrets.delete_secret(SecretId=self.secret_id(firm_id), ForceDeleteWithoutRecovery=True)
        except ClientError as exc:
            if _error_code(exc) in _GONE_CODES:  # none, or already on its way out (a second Disconnect)
                return
            raise TokenStoreError(
                f"could not delete secret {self.secret_id(firm_id)}: {_error_code(exc)}"
            ) from None

    def for_firm(self, firm_id: str) -> FirmTokens:
        return FirmTokens(self, firm_id)

    def _now(self) -> int:
        return int(self._clock.now().timestamp())

    def _note_refreshed(self, firm_id: str) -> None:
        """Record in the firm's config that its tokens were stored or refreshed just now."""
        if self._configs is None:
            return
        try:
            self._configs.record_tokens_refreshed(firm_id, self._clock.now())
        except (ClientError, BotocoreConnectionError, HTTPClientError) as exc:
            # The tokens are stored, which is all the firm's connection needs; a note lost only
            # brings the keep-alive forward (it refreshes a connection a little early).
            logger.warning(
                "could not record when the firm's tokens were refreshed",
                extra={"firm_id": firm_id, "error": type(exc).__name__},
            )

    def _refresh(self, refresh_token: str) -> TokenSet:
        if self._identity is None and self._identity_factory is not None:
            # Built at the first refresh: a run whose access token is still fresh never reads the
            # app's secret, and a secret that cannot be read fails that run, not the whole batch.
            self._identity = self._identity_factory()
        if self._identity is None:
            raise TypeError("this TokenStore was built without a XeroIdentity, so it cannot refresh")
        ends = self._monotonic() + REFRESH_BUDGET_SECONDS
        for attempt, delay in enumerate((*REFRESH_RETRY_DELAYS, None), start=1):
            timeout = min(REFRESH_ATTEMPT_MAX_SECONDS, ends - self._monotonic())
            try:
                return self._identity.refresh(refresh_token, timeout=timeout)
            except IdentityUnreachable as exc:
                pause = delay * random.uniform(0.5, 1.0) if delay is not None else None  # noqa: S311
                if pause is None or ends - self._monotonic() - pause < REFRESH_ATTEMPT_MIN_SECONDS:
                    raise
                # The message names the exception's type or Xero's status, never a token.
                logger.warning(
                    "refreshing tokens got no answer; asking again",
                    extra={"attempt": attempt, "error": str(exc), "pause": round(pause, 2)},
                )
                self._sleep(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _read(self, firm_id: str, *, gone_is_disconnect: bool = False) -> _Secret | None:
        """The secret, or None when there is none (or nothing usable in it).

        With ``gone_is_disconnect``, for a run that already read the secret once, a secret that no
        longer exists or is marked for deletion raises ``FirmDisconnected`` instead.
        """
        secret_id = self.secret_id(firm_id)
        try:
            answer = self._secrets.get_secret_value(SecretId=secret_id)
        except ClientError as exc:
            code = _error_code(exc)
            if gone_is_disconnect and code in _GONE_CODES:
                raise FirmDisconnected(f"secret {secret_id} was deleted during the run ({code})") from None
            if code in _GONE_CODES:  # none, or one on its way out: a new grant takes its name
                return None
            raise TokenStoreError(f"could not read secret {secret_id}: {code}") from None
        try:
            data = json.loads(answer["SecretString"])
        except (KeyError, ValueError):
            data = None
        tokens = _parse_tokens(data)
        if tokens is None:
            # Nothing in it can be used; reconnecting rewrites it, so treat it as absent.
            logger.warning("token secret is unusable", extra={"secret_id": secret_id})
            return None
        assert isinstance(data, dict)
        return _Secret(tokens, {k: v for k, v in data.items() if k not in _TOKEN_KEYS})

    def _write(self, firm_id: str, tokens: StoredTokens, extra: dict[str, Any]) -> None:
        """Store a new grant (the callback), creating the secret if the firm has none yet, and
        waiting out the deletion of one a Disconnect just deleted."""
        secret_id = self.secret_id(firm_id)
        body = _secret_body(tokens, extra)
        for pause in (*DELETION_WAITS, None):
            try:
                self._put_or_create(secret_id, body)
                return
            except ClientError as exc:
                code = _error_code(exc)
                if code != "InvalidRequestException" or pause is None:
                    raise TokenStoreError(f"could not write secret {secret_id}: {code}") from None
            logger.info(
                "token secret still being deleted; waiting", extra={"secret_id": secret_id, "pause": pause}
            )
            self._sleep(pause)

    def _put_or_create(self, secret_id: str, body: str) -> None:
        try:
            self._secrets.put_secret_value(SecretId=secret_id, SecretString=body)
            return
        except ClientError as exc:
            if _error_code(exc) != "ResourceNotFoundException":
                raise
        try:
            self._secrets.create_secret(Name=secret_id, SecretString=body)
        except ClientError as exc:
            # Two callbacks for the same firm racing to create it: the other won, so overwrite.
            if _error_code(exc) != "ResourceExistsException":
                raise
            self._secrets.put_secret_value(SecretId=secret_id, SecretString=body)

    def _update(self, firm_id: str, tokens: StoredTokens, extra: dict[str, Any]) -> None:
        """Store rotated tokens (a refresh) in the existing secret; never create it.

        Errors that pass are retried a few times with short pauses. A secret that is gone or marked
        for deletion means the firm was disconnected meanwhile: ``FirmDisconnected``.
        """
        secret_id = self.secret_id(firm_id)
        body = _secret_body(tokens, extra)
        # One version id for every attempt: should an attempt that seemed to fail have landed,
        # Secrets Manager takes the retry (same id, same value) as a no-op, not a second version.
        version = str(uuid.uuid4())
        attempts = len(WRITE_RETRY_DELAYS) + 1
        for attempt in range(1, attempts + 1):
            try:
                self._secrets.put_secret_value(
                    SecretId=secret_id, SecretString=body, ClientRequestToken=version
                )
                return
            except ClientError as exc:
                reason = _error_code(exc)
                if reason in _GONE_CODES:
                    raise FirmDisconnected(
                        f"secret {secret_id} was deleted during the run ({reason})"
                    ) from None
                if not _transient(exc) or attempt == attempts:
                    raise TokenStoreError(f"could not write secret {secret_id}: {reason}") from None
            except (BotocoreConnectionError, HTTPClientError) as exc:
                # The exception's type only: botocore's messages can quote the endpoint and request.
                reason = type(exc).__name__
                if attempt == attempts:
                    raise TokenStoreError(f"could not write secret {secret_id}: {reason}") from None
            delay = WRITE_RETRY_DELAYS[attempt - 1] * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
            logger.warning(
                "storing rotated tokens failed; retrying",
                extra={"secret_id": secret_id, "attempt": attempt, "error": reason, "pause": round(delay, 2)},
            )
            self._sleep(delay)


class FirmTokens:
    """One run's view of a firm's tokens: the secret is read once, then refreshed as needed.

    Satisfies ``xpm_sync.adapters.xpm.client.AccessTokenSource``. Thread-safe within the instance, so the
    XPM client's concurrent calls share one refresh.
    """

    def __init__(self, store: TokenStore, firm_id: str) -> None:
        self._store = store
        self._firm_id = firm_id
        self._lock = threading.Lock()
        self._secret: _Secret | None = None
        self.refreshed = 0

    @property
    def firm_id(self) -> str:
        return self._firm_id

    def access_token(self, *, force_refresh: bool = False, refused: str | None = None) -> str:
        """A token to call Xero with, refreshed when it is about to expire.

        ``refused`` is a token Xero just refused (a 401): another is got, unless another caller of
        this instance has already replaced it (callers that saw the same 401 share one refresh;
        each refresh spends a rotation). However young the refused token, it is replaced: Xero
        may end one early. ``force_refresh`` refreshes whatever is left (the keep-alive)."""
        with self._lock:
            secret = self._current()
            if refused is not None:
                if secret.tokens.access_token != refused:
                    return secret.tokens.access_token
                return self._refresh(secret)
            if force_refresh or secret.tokens.expires_at - self._store._now() < REFRESH_MARGIN_SECONDS:
                return self._refresh(secret)
            return secret.tokens.access_token

    def _current(self) -> _Secret:
        if self._secret is None:
            self._secret = self._store._read(self._firm_id)
            if self._secret is None:
                raise NeedsReconnect(f"firm {self._firm_id} has no stored Xero tokens")
        return self._secret

    def _refresh(self, secret: _Secret) -> str:
        lock = self._store._lock
        if lock is None:
            return self._refresh_from(secret)
        with lock.held(self._firm_id):
            current = self._store._read(self._firm_id, gone_is_disconnect=True)
            if current is None:
                self._secret = None
                raise NeedsReconnect(f"firm {self._firm_id} has no stored Xero tokens")
            if current.tokens.refresh_token != secret.tokens.refresh_token:
                # Another function refreshed while this one waited: its tokens are the new ones.
                self._secret = current
                if current.tokens.expires_at - self._store._now() >= REFRESH_MARGIN_SECONDS:
                    logger.info("using tokens another function refreshed", extra={"firm_id": self._firm_id})
                    return current.tokens.access_token
            return self._refresh_from(current)

    def _refresh_from(self, secret: _Secret) -> str:
        try:
            fresh = self._store._refresh(secret.tokens.refresh_token)
        except InvalidGrant:
            return self._recover(secret)
        return self._keep(fresh, secret.extra, refreshed_from=secret.tokens.refresh_token)

    def _recover(self, stale: _Secret) -> str:
        """After ``invalid_grant``: use the secret's token if another worker rotated it meanwhile."""
        # A disconnect revokes the grant, then deletes the secret: the likeliest cause of both.
        reread = self._store._read(self._firm_id, gone_is_disconnect=True)
        if reread is None:
            self._secret = None
            raise NeedsReconnect(f"firm {self._firm_id} has no stored Xero tokens")
        if reread.tokens.refresh_token == stale.tokens.refresh_token:
            raise NeedsReconnect(f"Xero refused the refresh token of firm {self._firm_id}")
        self._secret = reread
        logger.info(
            "picked up tokens rotated by another worker",
            extra={"firm_id": self._firm_id, "expires_at": reread.tokens.expires_at},
        )
        if reread.tokens.expires_at - self._store._now() >= REFRESH_MARGIN_SECONDS:
            return reread.tokens.access_token
        try:
            fresh = self._store._refresh(reread.tokens.refresh_token)
        except InvalidGrant:
            raise NeedsReconnect(f"Xero refused the refresh token of firm {self._firm_id}") from None
        return self._keep(fresh, reread.extra, refreshed_from=reread.tokens.refresh_token)

    def _keep(self, fresh: TokenSet, extra: dict[str, Any], *, refreshed_from: str) -> str:
        # A reconnect that stored a new grant while Xero answered this refresh (one that could not
        # wait for the lease) has replaced, and revoked, the grant just refreshed: the new grant is
        # the firm's, and must not be written over.
        on_record = self._store._read(self._firm_id, gone_is_disconnect=True)
        if on_record is not None and on_record.tokens.refresh_token != refreshed_from:
            logger.info(
                "a new grant was stored during the refresh; using it", extra={"firm_id": self._firm_id}
            )
            self._secret = on_record
            return on_record.tokens.access_token
        tokens = StoredTokens(fresh.access_token, fresh.refresh_token, fresh.expires_at)
        # Stored first: if this write fails, the new access token is never used and the old
        # refresh token (still honoured for 30 minutes) remains the one on record.
        self._store._update(self._firm_id, tokens, extra)
        self._store._note_refreshed(self._firm_id)
        self._secret = _Secret(tokens, extra)
        self.refreshed += 1
        logger.info(
            "refreshed tokens for firm", extra={"firm_id": self._firm_id, "expires_at": tokens.expires_at}
        )
        return tokens.access_token


class RefreshLock:
    """A lease on refreshing one firm's tokens, held as an item of the Config table.

    Takes the table and a clock. The item carries ``expires_at``,
    the table's TTL attribute, so a lease left by a function that died expires and is cleaned up.
    """

    def __init__(
        self,
        table: Table,
        clock: Clock,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic

    @contextmanager
    def held(self, firm_id: str, *, wait_seconds: float = LOCK_LEASE_SECONDS + 5) -> Iterator[None]:
        owner = uuid.uuid4().hex
        deadline = self._monotonic() + wait_seconds
        while not self._take(firm_id, owner):
            if self._monotonic() >= deadline:
                raise TokenStoreError(f"the token refresh lease of firm {firm_id} was never released")
            self._sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            self._give_back(firm_id, owner)

    def _take(self, firm_id: str, owner: str) -> bool:
        now = int(self._clock.now().timestamp())
        try:
            self._table.put_item(
                Item={
                    "firm_id": LOCK_KEY_PREFIX + firm_id,
                    "kind": "token_lock",
                    "owner": owner,
                    "expires_at": now + LOCK_LEASE_SECONDS,
                },
                ConditionExpression="attribute_not_exists(firm_id) OR expires_at < :now",
                ExpressionAttributeValues={":now": now},
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def _give_back(self, firm_id: str, owner: str) -> None:
        try:
            self._table.delete_item(
                Key={"firm_id": LOCK_KEY_PREFIX + firm_id},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": owner},
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise  # the lease ran out and another function holds it now: leave theirs alone


def _secret_body(tokens: StoredTokens, extra: dict[str, Any]) -> str:
    return json.dumps(
        {
            **extra,
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "expires_at": tokens.expires_at,
        }
    )


def _parse_tokens(data: Any) -> StoredTokens | None:
    if not isinstance(data, dict):
        return None
    access_token = data.get("access_token")
    refresh_token = data.get("refresh_token")
    expires_at = data.get("expires_at")
    if not isinstance(refresh_token, str) or not refresh_token:
        return None
    # With the refresh token there, an access token or expiry that is missing or unreadable only
    # means "refresh now": the firm's connection is still good.
    usable_access = access_token if isinstance(access_token, str) else ""
    return StoredTokens(usable_access, refresh_token, _epoch_seconds(expires_at) if usable_access else 0)


def _epoch_seconds(value: Any) -> int:
    # An expiry that cannot be read is read as long past: the token is refreshed before use.
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else 0
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            return int(number) if math.isfinite(number) else 0
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def _transient(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if isinstance(status, int) and (status >= 500 or status == 429):
        return True
    return _error_code(exc) in _TRANSIENT_CODES
