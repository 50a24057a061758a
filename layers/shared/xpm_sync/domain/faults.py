"""Whose fault a run's trouble is: the system's (operators are paged) or the firm's (its admin fixes it).

Operators act on the first kind only: XPM or Xero failing across firms, our own errors, our app's
credentials. Problems only a firm can fix (a connection to renew, setup to finish, record errors)
reach that firm's admin through Sync Monitoring and the email (SPEC A5); paging on them would keep
an alarm red whenever any firm has a problem of its own making.

Classified by the run-level entry codes a run reported (``domain.entries``, entity ``run``). Every
run-level code in the catalogue is in exactly one of the two sets (a test holds that), so a new
code must be given an owner before it ships.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

# The system's faults: nothing the firm does clears them, and they are worth an operator's look when
# they persist or spread across firms.
SYSTEM_FAULT_CODES: frozenset[str] = frozenset(
    {
        "XPM_UNAVAILABLE",  # XPM or Xero's sign-in service did not answer, or answered 5xx
        "XPM_RATE_LIMITED",  # a rate limit reached despite the call budget (the app's, or a tenant's)
        "XPM_BAD_RESPONSE",  # an answer the client could not use: XPM's side or our reader
        "XPM_TOO_SLOW",  # a run whose parts apply nothing twice in a row
        "XERO_APP_CREDENTIALS_INVALID",  # the app's own client id and secret, refused or unreadable
        "INTERNAL_ERROR",  # an unhandled error, or a worker stopped mid-run
    }
)

# Problems only the firm can fix; its admin is told, operators are not paged.
FIRM_PROBLEM_CODES: frozenset[str] = frozenset(
    {
        "XPM_NEEDS_RECONNECT",
        "XPM_WRONG_TENANT",
        "SYNC_NOT_CONFIGURED",
        "SYNC_SETUP_CHANGED",
        "DEFAULT_OFFICE_MISSING",
        "DEFAULT_PARTNER_NOT_IN_ACTIVE",
        "NOTIFICATION_USER_INVALID",
        "CONNECTION_OWNER_NOT_IN_XPM",
    }
)

RunFault = Literal["system", "firm"]


def system_faults(run_codes: Collection[str]) -> frozenset[str]:
    """The system-fault codes among a run's run-level entry codes."""
    return SYSTEM_FAULT_CODES.intersection(run_codes)


def failed_run_fault(status: str, run_codes: Collection[str]) -> RunFault | None:
    """Whose fault a failed run is; None for a run that did not fail.

    A run that failed on the system is the system's even when the firm also has a problem of its
    own (say, no notification user). A failed run that names no firm problem is the system's too: a
    failure nobody can place is an operator's to look at, never hidden from them.
    """
    if status != "failed":
        return None
    if system_faults(run_codes) or not FIRM_PROBLEM_CODES.intersection(run_codes):
        return "system"
    return "firm"
