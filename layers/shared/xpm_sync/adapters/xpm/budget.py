"""Per-tenant XPM call budget: 60 calls in any rolling minute, 5 in flight (SPEC A8).

XPM answers 429 past these limits, and a 429 for the minute limit costs a whole wait; pacing the
calls ourselves is cheaper. The budget is shared by every ``XpmApi`` for the same tenant in
the process (``budget_for``), because the limits are per tenant, not per client object.

The response headers ``X-MinLimit-Remaining`` / ``X-DayLimit-Remaining`` are tracked too: other
processes spend the same tenant's quota, and a day limit of 0 means every further call would be a
wasted 429, so calls are refused locally until the block expires.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from xpm_sync.adapters.xpm.errors import XpmRateLimited

PER_MINUTE = 60
CONCURRENT = 5
WINDOW_SECONDS = 60.0
# When a header says the day is spent but no Retry-After says until when, one probe call is let
# through after this long; its 429 carries the real Retry-After.
DAY_PROBE_SECONDS = 300.0


class CallBudget:
    """Thread-safe limiter. ``acquire`` waits for room or raises ``XpmRateLimited``."""

    def __init__(
        self,
        *,
        per_minute: int = PER_MINUTE,
        concurrent: int = CONCURRENT,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_minute < 1 or concurrent < 1:
            raise ValueError("a call budget needs room for at least one call")
        self.per_minute = per_minute
        self.concurrent = concurrent
        self.window_seconds = window_seconds
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._starts: deque[float] = deque()
        self._in_flight = 0
        self._day_blocked_until: float | None = None
        self.minute_remaining: int | None = None
        self.day_remaining: int | None = None
        self.app_minute_remaining: int | None = None

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def acquire(self, *, max_wait: float | None = None) -> None:
        """Take one call slot, waiting up to ``max_wait`` seconds (``None``: as long as needed).

        Raises ``XpmRateLimited`` at once when the wait is known not to fit, rather than
        sleeping first and failing after.
        """
        deadline = None if max_wait is None else self._clock() + max(max_wait, 0.0)
        with self._cond:
            while True:
                now = self._clock()
                self._refuse_if_day_spent(now)
                while self._starts and self._starts[0] <= now - self.window_seconds:
                    self._starts.popleft()
                left = None if deadline is None else deadline - now
                if self._in_flight >= self.concurrent:
                    if left is not None and left <= 0:
                        raise XpmRateLimited(
                            "XPM concurrency limit for this tenant is in use",
                            retry_after=1.0,
                            problem="concurrent",
                        )
                    self._cond.wait(timeout=left)
                    continue
                if len(self._starts) >= self.per_minute:
                    wait = self._starts[0] + self.window_seconds - now
                    if left is not None and wait > left:
                        raise XpmRateLimited(
                            f"XPM minute limit for this tenant is spent; room again in {wait:.0f}s",
                            retry_after=wait,
                            problem="minute",
                        )
                    # Sleeping outside the lock lets other threads release and observe meanwhile.
                    self._cond.release()
                    try:
                        self._sleep(wait)
                    finally:
                        self._cond.acquire()
                    continue
                self._starts.append(now)
                self._in_flight += 1
                return

    def release(self) -> None:
        with self._cond:
            if self._in_flight > 0:
                self._in_flight -= 1
            self._cond.notify()

    @contextmanager
    def slot(self, *, max_wait: float | None = None) -> Iterator[None]:
        self.acquire(max_wait=max_wait)
        try:
            yield
        finally:
            self.release()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Record the remaining-quota headers of an answer (any status)."""
        minute = _int_header(headers, "X-MinLimit-Remaining")
        day = _int_header(headers, "X-DayLimit-Remaining")
        app_minute = _int_header(headers, "X-AppMinLimit-Remaining")
        with self._cond:
            if minute is not None:
                self.minute_remaining = minute
            if app_minute is not None:
                self.app_minute_remaining = app_minute
            if day is not None:
                self.day_remaining = day
                if day > 0:
                    self._day_blocked_until = None
                elif self._day_blocked_until is None:
                    self._day_blocked_until = self._clock() + DAY_PROBE_SECONDS

    def day_spent(self, retry_after: float) -> None:
        """A 429 with problem ``day``: refuse every call for this tenant until ``retry_after``."""
        with self._cond:
            self.day_remaining = 0
            self._day_blocked_until = self._clock() + max(retry_after, 0.0)

    def _refuse_if_day_spent(self, now: float) -> None:
        if self._day_blocked_until is None:
            return
        wait = self._day_blocked_until - now
        if wait <= 0:
            self._day_blocked_until = None
            return
        raise XpmRateLimited(
            f"XPM daily limit for this tenant is spent; room again in {wait:.0f}s",
            retry_after=wait,
            problem="day",
        )


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


_registry: dict[str, CallBudget] = {}
_registry_lock = threading.Lock()


def budget_for(tenant_id: str) -> CallBudget:
    """The process-wide budget of one tenant, created on first use."""
    with _registry_lock:
        budget = _registry.get(tenant_id)
        if budget is None:
            budget = _registry[tenant_id] = CallBudget()
        return budget


def reset_budgets() -> None:
    """Forget every tenant's budget (tests, where one process plays many runs in seconds)."""
    with _registry_lock:
        _registry.clear()
