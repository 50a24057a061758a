"""What can go wrong talking to XPM, typed so the sync can act on each case."""

from __future__ import annotations


class XpmError(Exception):
    """Base of every XPM failure. Messages never contain tokens."""


class XpmAuthError(XpmError):
    """401 that survived one token refresh: the connection is expired or revoked."""


class XpmWrongTenant(XpmError):
    """403: the token does not cover the tenant (practice) asked for."""


class XpmRateLimited(XpmError):
    """429 whose ``Retry-After`` does not fit the time left or the call's total wait for limits,
    or the daily limit is spent."""

    def __init__(self, message: str, *, retry_after: float, problem: str | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.problem = problem


class XpmUnavailable(XpmError):
    """5xx or timeouts that outlasted the bounded retries."""


class XpmBadResponse(XpmError):
    """An answer that cannot be used: ``<Status>ERROR</Status>``, malformed or hostile XML."""


class XpmTooSlow(XpmError):
    """An answer still arriving when the run's time for reading ran out (a slow drip): the run
    keeps what it applied and goes on in a new invocation."""
