"""Typed domain errors of the API; ``xpm_sync.api.http`` turns each into SPEC B5's error body.

Messages are shown to the admin as they are, so they never carry a token, a code or a state.
"""

from __future__ import annotations

from typing import ClassVar


class ApiError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "BAD_REQUEST"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400
    code = "BAD_REQUEST"


class InvalidCursorError(ApiError):
    status = 400
    code = "INVALID_CURSOR"


class Unauthorized(ApiError):
    status = 401
    code = "UNAUTHORIZED"


class Forbidden(ApiError):
    status = 403
    code = "FORBIDDEN"


class NotFound(ApiError):
    status = 404
    code = "NOT_FOUND"


class NotConnected(ApiError):
    status = 409
    code = "NOT_CONNECTED"

    def __init__(self, message: str = "Connect to Xero Practice Manager first.") -> None:
        super().__init__(message)


class NeedsReconnectError(NotConnected):
    """The firm connected once, but Xero no longer accepts the connection (SPEC A8's
    ``needs_reconnect``). B5 knows one 409 code for this, ``NOT_CONNECTED``; the message says why."""

    def __init__(
        self,
        message: str = "Xero no longer accepts this connection; connect to Xero Practice Manager again.",
    ) -> None:
        super().__init__(message)


class InvalidField(ApiError):
    status = 422
    code = "INVALID_FIELD"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class TooManyRequests(ApiError):
    status = 429
    code = "SYNC_TOO_SOON"

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class XeroUnavailable(ApiError):
    """Xero failed to answer; not the caller's mistake, and worth trying again."""

    status = 502
    code = "XERO_UNAVAILABLE"

    def __init__(self, message: str = "Xero did not answer; try again in a minute.") -> None:
        super().__init__(message)
