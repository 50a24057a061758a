"""HTTP client for the XPM v3.1 API (SPEC A8): staff list, client list (streamed) and one client.

Every request goes through the tenant's ``CallBudget`` and is retried only where a retry can help:
401 once after a forced token refresh, 429 when its ``Retry-After`` fits the time left (and one
call's waits stay within a minute's window and a margin), 5xx and transport failures with
exponential backoff and full jitter. Everything else is a typed
``XpmError`` the sync turns into a run-level entry. The access token is only ever placed in the
request header: it is not logged and never appears in an exception.
"""

from __future__ import annotations

import json
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Protocol, TypeVar

import httpx

from xpm_sync.adapters.tls import shared_tls_context
from xpm_sync.adapters.xpm import xml
from xpm_sync.adapters.xpm.budget import CallBudget, budget_for
from xpm_sync.adapters.xpm.errors import (
    XpmAuthError,
    XpmBadResponse,
    XpmRateLimited,
    XpmTooSlow,
    XpmUnavailable,
    XpmWrongTenant,
)
from xpm_sync.domain.xpm_records import XpmClientRecord, XpmStaff
from xpm_sync.observability import logger, tracer

API_PREFIX = "/practicemanager/3.1/"
# Left unspent of the caller's time budget, so a run that gives up still has time to record why.
SAFETY_MARGIN_SECONDS = 15.0
# An answer still arriving this close to the invocation's end is cut off (XpmTooSlow): the run
# needs the rest to apply what it read and write its checkpoint. Less than the engine's own
# checkpoint margin, so a list that keeps coming is stopped by the engine between two records.
READ_DEADLINE_MARGIN_SECONDS = 45.0
# The least time a call's status line and headers are waited for, deadline or not (one read's).
MIN_ANSWER_WAIT_SECONDS = 1.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
# XPM sends Retry-After with every 429; if it is ever missing, a minute is the limit's own window.
DEFAULT_RETRY_AFTER_SECONDS = 60.0
# One call waits out rate limits for at most this long in all: one minute's window and a margin.
# A tenant still limited after that is spent by something the run cannot wait for; the next run
# carries on, rather than this invocation idling through several more windows.
MAX_RATE_LIMIT_WAIT_SECONDS = 90.0
# ...except for the concurrent-calls limit, which frees up as soon as a call in flight ends: a 429
# for it without Retry-After waits a short jittered back-off, never less than this.
CONCURRENT_RETRY_FLOOR_SECONDS = 1.0
# Error bodies are small; reading more than this from a 4xx would only serve a hostile server.
_ERROR_BODY_LIMIT = 64 * 1024
# A call refreshes at most this many refused tokens before it takes the connection as lost.
_TOKENS_REFUSED_AT_MOST = 2
# These failures happen before the request reaches XPM, so they cost no quota and are not counted.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

_T = TypeVar("_T")


class AccessTokenSource(Protocol):
    def access_token(self, *, force_refresh: bool = False, refused: str | None = None) -> str: ...


class _BodyInterrupted(XpmUnavailable):
    """The connection failed while the body was streaming in."""


class XpmApi:
    """One tenant's view of XPM. Safe to share between threads; ``calls`` counts requests sent."""

    def __init__(
        self,
        *,
        api_url: str,
        tenant_id: str,
        tokens: AccessTokenSource,
        http: httpx.Client | None = None,
        remaining_seconds: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        budget: CallBudget | None = None,
        max_attempts: int = 4,
        timeout: float = 60.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._base = api_url.rstrip("/") + API_PREFIX
        self._tenant_id = tenant_id
        self._tokens = tokens
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout, verify=shared_tls_context())
        self._timeout = timeout
        self._remaining_seconds = remaining_seconds
        self._sleep = sleep
        self._budget = budget if budget is not None else budget_for(tenant_id)
        self._max_attempts = max_attempts
        self._calls_lock = threading.Lock()
        self.calls = 0

    # --- public API -------------------------------------------------------------------------

    # capture_response=False: the staff list is personal data and would blow X-Ray's size limit.
    @tracer.capture_method(capture_response=False)
    def list_staff(self) -> list[XpmStaff]:
        return self._collect("staff.api/list", xml.iter_staff)

    # Not traced: a subsegment would stay open while the caller does its own (traced) work per
    # client, nesting the caller's spans inside XPM's.
    def iter_clients(self, *, modified_since: datetime | None = None) -> Iterator[XpmClientRecord]:
        """Every client (detailed), streamed: each is yielded as soon as it has been read.

        ``modified_since`` must be timezone-aware; it is sent in UTC as XPM expects (SPEC A7).
        Stopping early (``close()`` on the iterator, or dropping it) releases the connection.
        """
        params = {"detailed": "true"}
        if modified_since is not None:
            params["modifiedsince"] = format_modified_since(modified_since)
        return self._records("client.api/list", params, xml.iter_clients)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> XpmApi:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- reading answers ----------------------------------------------------------------------

    def _records(
        self,
        path: str,
        params: dict[str, str],
        reader: Callable[[Iterable[bytes]], Iterator[_T]],
    ) -> Iterator[_T]:
        # A body cut short is retried once, but only while nothing from it has been handed out:
        # after that the caller has acted on part of the answer and a silent restart would repeat it.
        retried = False
        while True:
            yielded = False
            try:
                for record in self._read(path, params, reader):
                    yielded = True
                    yield record
                return
            except _CUT_SHORT as exc:
                if yielded or retried:
                    raise
                retried = True
                _log_cut_short(path, exc)

    def _collect(self, path: str, reader: Callable[[Iterable[bytes]], Iterator[_T]]) -> list[_T]:
        # Nothing is handed out until the whole answer is in, so a body cut short anywhere can be
        # read again from the start without the caller seeing a record twice.
        try:
            return list(self._read(path, {}, reader))
        except _CUT_SHORT as exc:
            _log_cut_short(path, exc)
        return list(self._read(path, {}, reader))

    def _read(
        self,
        path: str,
        params: dict[str, str],
        reader: Callable[[Iterable[bytes]], Iterator[_T]],
    ) -> Iterator[_T]:
        with self._call(path, params) as response:
            yield from reader(self._body(response))

    def _body(self, response: httpx.Response) -> Iterator[bytes]:
        """The answer's bytes as they arrive, until the run's time for reading is up (SPEC A7: an
        overall deadline, not only a per-read timeout, so a slow-drip answer cannot outlive the
        invocation).

        With a deadline, the bytes are read by a helper thread and handed over here, so that the
        deadline holds even while no byte comes: a read blocked on the socket cannot be given a new
        timeout once it has begun. Without one (no invocation to outlive), they are read here."""
        if self._read_time_left() is None:
            yield from _chunks_of(response)
            return
        reader = _ChunkReader(response)
        try:
            while True:
                left = self._read_time_left()
                if left is not None and left <= 0:
                    # Past the deadline even while bytes keep coming: chunks read ahead and waiting
                    # would otherwise be handed out (and more read) for as long as the answer flows.
                    raise _NoChunkInTime()
                chunk = reader.next_chunk(timeout=left if left is not None else 0.0)
                if chunk is None:
                    return
                yield chunk
        except _NoChunkInTime:
            raise XpmTooSlow(
                "XPM's answer was still arriving when the run's time for reading ran out"
            ) from None
        finally:
            reader.stop()

    @contextmanager
    def _call(self, path: str, params: dict[str, str]) -> Iterator[httpx.Response]:
        """A 200 answer whose body is still to be read; connection and budget slot freed on exit."""
        response = self._open(path, params)
        try:
            yield response
        finally:
            response.close()
            self._budget.release()

    def _open(self, path: str, params: dict[str, str]) -> httpx.Response:
        url = self._base + path
        token = self._tokens.access_token()
        # The tokens XPM refused to this call. Another thread may already have replaced the first
        # (so asking for another costs no refresh), and Xero may end that one early too: the call
        # gives up when a token comes back refused again, or the second new one is refused.
        refused: set[str] = set()
        failures = 0
        waited_for_limits = 0.0
        while True:
            self._budget.acquire(max_wait=self._time_left())
            started = time.monotonic()
            try:
                # The timeout is set per request so it holds for a shared, caller-made httpx client too.
                request = self._http.build_request(
                    "GET", url, params=params, headers=self._headers(token), timeout=self._request_timeout()
                )
                response = self._send(request)
            except XpmTooSlow:
                self._budget.release()
                self._count_call()
                raise
            except httpx.TransportError as exc:
                self._budget.release()
                if not isinstance(exc, _NOT_SENT):
                    self._count_call()
                failures += 1
                self._log(path, params, None, started, failures, error=type(exc).__name__)
                self._back_off(failures, f"{type(exc).__name__} calling {path}", cause=exc)
                continue
            self._count_call()
            status = response.status_code
            self._budget.observe(response.headers)
            self._log(path, params, status, started, failures + 1)
            if status == 200:
                return response
            retried_status = status in (401, 429) or status >= 500
            try:
                failure = None if retried_status else self._failure(response, path)
            finally:
                response.close()
                self._budget.release()
            if failure is not None:
                raise failure
            if status == 401:
                if token in refused or len(refused) >= _TOKENS_REFUSED_AT_MOST:
                    raise XpmAuthError(
                        "XPM refused the access token again after a refresh: the connection has "
                        "expired or been revoked"
                    )
                refused.add(token)
                token = self._tokens.access_token(refused=token)
                continue
            if status == 429:
                failures += 1
                waited_for_limits += self._wait_for_rate_limit(response, failures, waited_for_limits)
                continue
            failures += 1  # 5xx, the one status left
            self._back_off(failures, f"HTTP {status} from {path}")

    def _send(self, request: httpx.Request) -> httpx.Response:
        """The answer's status and headers, as soon as they are in; with a deadline, no later than
        the run's time for reading (SPEC A7): a server can drip them a few bytes at a time, each
        within the per-read timeout, so the request waits on a helper thread, as the body does."""
        if self._read_time_left() is None:
            return self._http.send(request, stream=True)
        # Past the reading deadline a call still gets a moment for its status, as one read did
        # before: a quick 429, 401 or 403 still says what it says.
        grace_ends = time.monotonic() + MIN_ANSWER_WAIT_SECONDS

        def time_left() -> float:
            return max(self._read_time_left() or 0.0, grace_ends - time.monotonic())

        try:
            return _PendingAnswer(self._http, request).result(time_left=time_left)
        except _NoChunkInTime:
            raise XpmTooSlow("XPM had not begun to answer when the run's time for reading ran out") from None

    def _failure(self, response: httpx.Response, path: str) -> Exception:
        """The error a non-200 answer that is not retried stands for."""
        status = response.status_code
        if status == 403:
            return XpmWrongTenant(f"XPM refused access to tenant {self._tenant_id} (HTTP 403)")
        if 400 <= status < 500:
            description = self._error_description(response)
            if description is not None:
                return xml.XpmStatusError(description)
        return XpmBadResponse(f"XPM answered HTTP {status} for {path}")

    def _error_description(self, response: httpx.Response, *, xpm_only: bool = False) -> str | None:
        # Some application errors come back as a 4xx or 5xx with the usual XML body, or as JSON
        # (`{"ErrorDescription": ...}`); its description is far more useful than the bare status.
        # ``xpm_only``: XPM's own error only, not a gateway's `Detail` or `message`.
        try:
            body = b""
            for chunk in self._body(response):
                body += chunk
                if len(body) > _ERROR_BODY_LIMIT:
                    return None
        except (httpx.HTTPError, _BodyInterrupted, XpmTooSlow, XpmBadResponse):
            # No description in time (or none readable): the status alone speaks for the answer.
            return None
        if body.lstrip().startswith(b"{"):
            return _json_error_description(body, _XPM_JSON_KEYS if xpm_only else _JSON_DESCRIPTION_KEYS)
        try:
            for _ in xml.iter_elements([body], xml.CLIENT_PATH):
                pass
        except xml.XpmStatusError as exc:
            return exc.description
        except XpmBadResponse:
            return None
        return None

    # --- retry policy -------------------------------------------------------------------------

    def _time_left(self) -> float | None:
        if self._remaining_seconds is None:
            return None
        return max(self._remaining_seconds() - SAFETY_MARGIN_SECONDS, 0.0)

    def _read_time_left(self) -> float | None:
        """What is left for reading answers: the invocation's time less what the run needs after
        (applying what it read, writing its checkpoint). None when there is no deadline (no
        invocation, or one with unlimited time: a harness or the local stack)."""
        if self._remaining_seconds is None:
            return None
        remaining = self._remaining_seconds()
        return remaining - READ_DEADLINE_MARGIN_SECONDS if math.isfinite(remaining) else None

    def _request_timeout(self) -> float:
        """A per-read timeout that never reaches past the reading deadline, and that one read can
        never stretch past the invocation's end: the deadline is checked as bytes arrive, so a read
        started just before it may wait this long after it, within the margin kept for the run."""
        left = self._read_time_left()
        if left is None:
            return self._timeout
        return min(self._timeout, max(1.0, left), READ_DEADLINE_MARGIN_SECONDS - SAFETY_MARGIN_SECONDS)

    def _back_off(self, failures: int, why: str, *, cause: Exception | None = None) -> None:
        if failures >= self._max_attempts:
            raise XpmUnavailable(f"XPM unavailable after {failures} attempts: {why}") from cause
        delay = _jittered_delay(failures)
        left = self._time_left()
        if left is not None and delay > left:
            raise XpmUnavailable(f"XPM unavailable and no time left to retry: {why}") from cause
        self._sleep(delay)

    def _wait_for_rate_limit(self, response: httpx.Response, failures: int, waited: float) -> float:
        """Sleep out a 429 and return the seconds slept, or raise ``XpmRateLimited`` when the wait
        does not fit: a day's limit, the attempts or the invocation's time used up, or more than
        :data:`MAX_RATE_LIMIT_WAIT_SECONDS` waited by this call in all."""
        problem = (response.headers.get("X-Rate-Limit-Problem") or "").strip().lower() or None
        retry_after = _retry_after(response.headers.get("Retry-After"))
        if retry_after is None:
            # Too many calls at once clears when one ends: waiting the minute's window would waste
            # most of the invocation. The other limits are windows of their own: wait one out.
            if problem == "concurrent":
                retry_after = max(CONCURRENT_RETRY_FLOOR_SECONDS, _jittered_delay(failures))
            else:
                retry_after = DEFAULT_RETRY_AFTER_SECONDS
        if problem in ("day", "daily"):
            self._budget.day_spent(retry_after)
            raise XpmRateLimited(
                f"XPM daily limit reached for tenant {self._tenant_id}; retry after {retry_after:.0f}s",
                retry_after=retry_after,
                problem="day",
            )
        left = self._time_left()
        if (
            failures >= self._max_attempts
            or (left is not None and retry_after > left)
            or waited + retry_after > MAX_RATE_LIMIT_WAIT_SECONDS
        ):
            raise XpmRateLimited(
                f"XPM rate limit ({problem or 'unknown'}) reached for tenant {self._tenant_id}; "
                f"retry after {retry_after:.0f}s",
                retry_after=retry_after,
                problem=problem,
            )
        self._sleep(retry_after)
        return retry_after

    # --- plumbing -----------------------------------------------------------------------------

    def _headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "xero-tenant-id": self._tenant_id,
            "Accept": "text/xml",
        }

    def _count_call(self) -> None:
        with self._calls_lock:
            self.calls += 1

    def _log(
        self,
        path: str,
        params: dict[str, str],
        status: int | None,
        started: float,
        attempt: int,
        *,
        error: str | None = None,
    ) -> None:
        logger.debug(
            "XPM call",
            extra={
                "path": path,
                "params": params,
                "status": status,
                "ms": round((time.monotonic() - started) * 1000),
                "attempt": attempt,
                "error": error,
                "tenant_id": self._tenant_id,
            },
        )


def format_modified_since(moment: datetime) -> str:
    """``yyyy-MM-ddTHH:mm:ss`` in UTC, the form ``client.api/list`` takes."""
    # A naive datetime could be local time and silently shift the window by hours: refuse it.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("modified_since must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


# Where an error answered in JSON puts its description: XPM's own error object, then Xero's
# gateway problem (`Detail`) or another gateway's `message`. Matched case-insensitively.
_XPM_JSON_KEYS = ("errordescription",)
_JSON_DESCRIPTION_KEYS = (*_XPM_JSON_KEYS, "detail", "message")


def _json_error_description(body: bytes, keys: tuple[str, ...]) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    by_key = {str(key).casefold(): value for key, value in document.items()}
    for key in keys:
        value = by_key.get(key)
        if isinstance(value, str) and value.strip():
            return xml.sanitise(value)
    return None


def _jittered_delay(failures: int) -> float:
    """Exponential back-off with full jitter: many firms' workers retrying at once must not hit XPM
    in lockstep."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1))
    return random.uniform(0.0, ceiling)  # noqa: S311 - jitter, not security


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header, given as seconds or as an HTTP date (RFC 9110 10.2.3);
    ``None`` when it is missing or neither."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            moment = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:  # "-0000": UTC, as HTTP dates are
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _chunks_of(response: httpx.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes()
    except httpx.TransportError as exc:
        raise _BodyInterrupted(
            f"XPM connection failed while reading the answer ({type(exc).__name__})"
        ) from exc
    except httpx.DecodingError as exc:
        # Content-Encoding said gzip (or another coding) and the bytes were not: the answer is
        # unusable as sent, and asking again would most likely bring the same bytes.
        raise XpmBadResponse(
            f"XPM's answer could not be decoded as its Content-Encoding says ({type(exc).__name__})"
        ) from exc


class _NoChunkInTime(Exception):
    """The reading deadline passed before the next bytes came."""


_END = object()


class _ChunkReader:
    """Reads a response's bytes on a daemon thread and hands them over one chunk at a time, so the
    caller can stop waiting at its deadline whatever the socket does. A few chunks are read ahead at
    most; once stopped, the thread ends at its next chunk (or when the caller closes the response)."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks: queue.Queue[object] = queue.Queue(maxsize=4)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(response,), name="xpm-read", daemon=True)
        self._thread.start()

    def _pump(self, response: httpx.Response) -> None:
        try:
            for chunk in _chunks_of(response):
                if not self._hand_over(chunk):
                    return
            self._hand_over(_END)
        except Exception as exc:  # handed to the caller's thread, raised there
            self._hand_over(exc)

    def _hand_over(self, item: object) -> bool:
        while not self._stopped.is_set():
            try:
                self._chunks.put(item, timeout=0.5)
            except queue.Full:
                continue
            return True
        return False

    def next_chunk(self, *, timeout: float) -> bytes | None:
        """The next chunk, None at the end; raises what the reading raised, or _NoChunkInTime."""
        try:
            item = self._chunks.get(timeout=timeout)
        except queue.Empty:
            raise _NoChunkInTime() from None
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, bytes)
        return item

    def stop(self) -> None:
        self._stopped.set()


_WAIT_SLICE_SECONDS = 0.25


class _PendingAnswer:
    """Sends a request on a daemon thread, so the caller can stop waiting for the status line and
    headers at its deadline whatever the socket does. An answer that comes after the caller gave up
    is closed by the thread; an error is raised in the caller's thread."""

    def __init__(self, http: httpx.Client, request: httpx.Request) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._abandoned = False
        self._response: httpx.Response | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._send, args=(http, request), name="xpm-send", daemon=True).start()

    def _send(self, http: httpx.Client, request: httpx.Request) -> None:
        try:
            response = http.send(request, stream=True)
        except BaseException as exc:  # handed to the caller's thread, raised there
            with self._lock:
                self._error = exc
        else:
            with self._lock:
                if self._abandoned:
                    response.close()
                    return
                self._response = response
        self._done.set()

    def result(self, *, time_left: Callable[[], float | None]) -> httpx.Response:
        """The answer; raises what sending raised, or _NoChunkInTime once ``time_left`` runs out
        first (asked again every moment: the clock it reads is the invocation's)."""
        while not self._done.is_set():
            left = time_left()
            if left is not None and left <= 0:
                break
            self._done.wait(_WAIT_SLICE_SECONDS if left is None else min(left, _WAIT_SLICE_SECONDS))
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._response is None:
                self._abandoned = True
                raise _NoChunkInTime()
            return self._response


_CUT_SHORT = (xml.XpmTruncatedResponse, _BodyInterrupted)


def _log_cut_short(path: str, exc: Exception) -> None:
    logger.debug("XPM answer cut short; reading it again", extra={"path": path, "error": str(exc)})
