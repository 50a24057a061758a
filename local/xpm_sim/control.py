"""Test controls of the simulator: planned faults, rate limits and the record of calls served."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Faults that act before authentication, like an API gateway would. ``wrong_tenant``: the 403 Xero
# answers for a tenant the connection no longer reaches (the practice disconnected the app).
GATEWAY_FAULTS = frozenset(
    {"drop", "unavailable", "server_error", "rate_limit", "token_expired", "wrong_tenant"}
)
# Faults that replace (or delay) an authorised XPM answer. ``drip``: the right answer, sent
# ``bytes`` at a time (default 64 KB) with ``every`` seconds between (default 2); with
# ``part="headers"`` the status line and headers drip so, and the body follows at once.
# ``oversized``: ``mb`` megabytes of text in the one record's Name, or with ``place="header"`` in
# an element outside any record.
CONTENT_FAULTS = frozenset(
    {"slow", "drip", "status_error", "truncated", "malformed", "xxe", "billion_laughs", "oversized"}
)
# ``lose_answer``: the token endpoint carries the request out (a refresh rotates the grant), then
# hangs up before answering, as a connection lost on the way back does.
IDENTITY_FAULTS = frozenset({"invalid_grant", "deny_consent", "lose_answer"})
FAULT_KINDS = GATEWAY_FAULTS | CONTENT_FAULTS | IDENTITY_FAULTS

XPM_PREFIX = "/practicemanager/"


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: dict[str, str]
    tenant_id: str | None
    # 0 when the simulator closed the connection without answering (fault ``drop``).
    status: int
    at: datetime


@dataclass
class Fault:
    kind: str
    times: int | None
    path: str | None
    params: dict[str, Any] = field(default_factory=dict)

    def applies_to(self, path: str) -> bool:
        if self.path is not None:
            return self.path in path
        # Without a path, generic faults hit XPM calls only, so that a test breaking XPM does not
        # also break the token refresh the client makes on its way there.
        if self.kind in ("invalid_grant", "lose_answer"):
            return path == "/connect/token"
        if self.kind == "deny_consent":
            return path == "/identity/connect/authorize"
        return path.startswith(XPM_PREFIX)


class Faults:
    """Planned failures, consumed in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, kind: str, *, times: int | None = 1, path: str | None = None, **params: Any) -> None:
        """Plan ``kind`` for the next ``times`` matching calls (``None``: until cleared).

        ``path`` is a substring of the request path; without it XPM calls match (the token endpoint
        for ``invalid_grant``, the authorize endpoint for ``deny_consent``).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for until cleared")
        with self._lock:
            self._faults.append(Fault(kind, times, path, dict(params)))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, path: str, kinds: frozenset[str]) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.applies_to(path):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None


@dataclass(frozen=True)
class Admission:
    allowed: bool
    problem: str | None = None
    retry_after: int = 0


class Limits:
    """XPM's per-tenant limits (60 a rolling minute, 5,000 a day, 5 at once) and the app minute."""

    def __init__(self) -> None:
        self.enabled = True
        self.per_minute = 60
        self.per_day = 5000
        self.concurrent = 5
        self.app_per_minute = 10_000
        self._lock = threading.Lock()
        self._minute: dict[str, deque[float]] = {}
        self._day: dict[str, deque[float]] = {}
        self._app: deque[float] = deque()
        self._in_flight: dict[str, int] = {}

    def reset(self) -> None:
        with self._lock:
            self._minute.clear()
            self._day.clear()
            self._app.clear()
            self._in_flight.clear()

    @staticmethod
    def _trim(window: deque[float], now: float, span: float) -> None:
        while window and window[0] <= now - span:
            window.popleft()

    def admit(self, tenant: str, now: float) -> Admission:
        """Count a call and take a concurrency slot, or say which limit refuses it.

        Refused calls are not counted, as with Xero, so a client that waits Retry-After gets in.
        """
        with self._lock:
            minute = self._minute.setdefault(tenant, deque())
            day = self._day.setdefault(tenant, deque())
            self._trim(minute, now, 60)
            self._trim(day, now, 86_400)
            self._trim(self._app, now, 60)
            if self.enabled:
                if self._in_flight.get(tenant, 0) >= self.concurrent:
                    return Admission(False, "concurrent", 1)
                if len(day) >= self.per_day:
                    return Admission(False, "day", max(1, math.ceil(day[0] + 86_400 - now)))
                if len(minute) >= self.per_minute:
                    return Admission(False, "minute", max(1, math.ceil(minute[0] + 60 - now)))
                if len(self._app) >= self.app_per_minute:
                    return Admission(False, "appminute", max(1, math.ceil(self._app[0] + 60 - now)))
            minute.append(now)
            day.append(now)
            self._app.append(now)
            self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
            return Admission(True)

    def release(self, tenant: str) -> None:
        with self._lock:
            self._in_flight[tenant] = max(0, self._in_flight.get(tenant, 0) - 1)

    def remaining(self, tenant: str | None, now: float) -> dict[str, str]:
        with self._lock:
            self._trim(self._app, now, 60)
            minute = self._minute.get(tenant or "", deque())
            day = self._day.get(tenant or "", deque())
            self._trim(minute, now, 60)
            self._trim(day, now, 86_400)
            return {
                "X-MinLimit-Remaining": str(max(0, self.per_minute - len(minute))),
                "X-DayLimit-Remaining": str(max(0, self.per_day - len(day))),
                "X-AppMinLimit-Remaining": str(max(0, self.app_per_minute - len(self._app))),
            }
