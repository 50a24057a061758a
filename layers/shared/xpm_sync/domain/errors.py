"""What a request can be refused for, as the domain says it: no HTTP here.

``xpm_sync.api.http`` is the one place that turns each of these into SPEC B5's error body and
status. Messages are shown to the admin as they are, so they never carry a token, a code or a
state, nor anything the caller sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class DomainError(Exception):
    # The admin's message when the raise names none: errors whose message never varies set it.
    default_message: ClassVar[str | None] = None

    def __init__(self, message: str | None = None) -> None:
        if message is None:
            if self.default_message is None:
                raise TypeError(f"{type(self).__name__} needs a message")
            message = self.default_message
        super().__init__(message)
        self.message = message


class BadRequest(DomainError):
    """The request cannot be read at all (a body that is not JSON, say)."""


class InvalidCursor(DomainError):
    """A paging cursor this API did not hand out, or handed out for another firm or list."""

    default_message = "cursor is not one this API handed out."


class NotSignedIn(DomainError):
    """No signed-in user called."""


class NotAnAdmin(DomainError):
    """The caller belongs to no firm, or is not one of its admins (SPEC B4)."""


class NotFound(DomainError):
    """Nothing of that name in the caller's firm (another firm's record reads the same)."""


class NotConnected(DomainError):
    default_message = "Connect to Xero Practice Manager first."


class ConnectionBroken(NotConnected):
    """The firm connected once, but Xero no longer accepts the connection (SPEC A8's
    ``needs_reconnect``). B5 knows one 409 code for this, ``NOT_CONNECTED``; the message says why."""

    default_message = "Xero no longer accepts this connection; connect to Xero Practice Manager again."


class NotConfigured(DomainError):
    """Start Sync before the setup names what a run needs (SPEC A6)."""

    def __init__(self, missing: Sequence[str]) -> None:
        names = ", ".join(missing)
        super().__init__(f"Finish the setup first: {names} must be set. Nothing was started.")
        self.missing = list(missing)


class InvalidValue(DomainError):
    """A field's value is missing, of the wrong type, or names something that does not exist."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class SyncTooSoon(DomainError):
    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PreviewTooSoon(SyncTooSoon):
    """Preview pressed while one is queued or running, or within 5 minutes of the last (SPEC B5):
    Start Sync's 429, with its own code so the frontend can tell which button must wait."""


class XeroUnavailable(DomainError):
    """Xero failed to answer; not the caller's mistake, and worth trying again."""

    default_message = "Xero did not answer; try again in a minute."


class OAuthStateInvalid(DomainError):
    """The callback's ``state`` is not one this firm's signed-in admin was issued by their own
    connect, or it is malformed, used or expired (SPEC B4). The message does not say which: a
    caller probing other people's states learns nothing."""

    default_message = (
        "This Xero sign-in does not belong to a connect you started, or it has expired. "
        "Press Connect to Xero Practice Manager again."
    )


class XeroConsentDenied(DomainError):
    """Xero sent the admin back with an error instead of a code (access not allowed): nothing is
    connected and the state is used up (SPEC B5)."""

    default_message = "Access was not allowed at Xero, so nothing was connected. Connect again to retry."


class NoPracticeManager(DomainError):
    """The consent granted no Practice Manager tenant: its tokens are revoked, nothing is stored
    and the firm's previous connection stands (SPEC A6)."""

    default_message = (
        "The Xero sign-in gave access to no Xero Practice Manager practice, so nothing was "
        "connected. Connect again and allow access to your practice."
    )


# --- What a write to Active can meet (raised by the Active store, handled by the sync) ----------


class RecordGone(Exception):
    """The record was deleted in Active while the run was going; the sync does not bring it back."""


class RecordTooLarge(Exception):
    """The record's Active item would pass DynamoDB's 400 KB limit (SPEC A4: ``RECORD_TOO_LARGE``)."""
