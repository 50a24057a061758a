"""One loopback HTTP server playing Xero identity, Xero connections and XPM API v3.1.

It serves all three base URLs (XERO_LOGIN_URL = XERO_IDENTITY_URL = XERO_API_URL = ``sim.url``) so
tests, ``make demo`` and the benchmark run without a network. Big lists are written with chunked
transfer encoding from a generator, so a 50,000-client answer never exists as one string.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import sys
import threading
import time
import traceback
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from local.xpm_sim import render
from local.xpm_sim.control import (
    CONTENT_FAULTS,
    GATEWAY_FAULTS,
    XPM_PREFIX,
    Call,
    Fault,
    Faults,
    Limits,
)
from local.xpm_sim.identity import (
    CODE_VERIFIER_SHAPE,
    FULL_SCOPE,
    AccessCheck,
    Grant,
    Identity,
    IdentityError,
)
from local.xpm_sim.model import Practice

XPM_BASE = "/practicemanager/3.1/"
_CHUNK = 64 * 1024
_XML = "text/xml; charset=utf-8"
_JSON = "application/json; charset=utf-8"
_SLOW_FAULTS = frozenset({"slow"})
_DRIP_FAULTS = frozenset({"drip"})


@dataclass
class _Tenant:
    tenant_id: str
    tenant_type: str
    added_at: datetime
    practice: Practice | None = None
    org_name: str | None = None

    @property
    def name(self) -> str | None:
        return self.practice.tenant_name if self.practice is not None else self.org_name


@dataclass
class _Answer:
    status: int
    body: bytes | Iterable[str] = b""
    content_type: str = _JSON
    headers: dict[str, str] | None = None
    # Fault ``drip``: the body goes out (bytes, seconds): so many bytes at a time, so long apart.
    drip: tuple[int, float] | None = None
    # ``drip`` with ``part="headers"``: the status line and headers drip instead, then the body.
    drip_headers: bool = False


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Answer:
    return _Answer(status, json.dumps(payload).encode(), _JSON, headers)


def _gateway(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> _Answer:
    return _json(status, {"Type": None, "Title": title, "Status": status, "Detail": detail}, headers)


def _unauthorized(expired: bool) -> _Answer:
    if expired:
        return _gateway(
            401, "Unauthorized", "TokenExpired", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return _gateway(401, "Unauthorized", "AuthenticationUnsuccessful")


def _xml(text: str, status: int = 200) -> _Answer:
    return _Answer(status, text.encode("utf-8"), _XML)


def _xpm_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive connections would otherwise make stop() wait for every idle client to hang up.
    block_on_close = False
    request_queue_size = 128
    simulator: Simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer (timeouts, the drop fault) is routine, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections end after this, so their threads do not pile up.
    timeout = 30
    # Buffered, so headers and a small body leave in one segment; handle_one_request flushes.
    wbufsize = _CHUNK

    def setup(self) -> None:
        super().setup()
        # Without it, Nagle plus delayed ACKs add ~40 ms to every keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        cast(_Server, self.server).simulator._serve(self)

    def do_POST(self) -> None:
        cast(_Server, self.server).simulator._serve(self)

    def do_DELETE(self) -> None:
        cast(_Server, self.server).simulator._serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        # Tests and the demo read their own logs; a line per request would drown them.
        return


class Simulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.RLock()
        self._offset = 0.0
        self._tenants: dict[str, _Tenant] = {}
        self._calls: list[Call] = []
        self.faults = Faults()
        self.limits = Limits()
        self._server = _Server((host, port), _Handler)
        self._server.simulator = self
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host!s}:{bound_port}"
        self.identity = Identity(issuer=self.url + "/identity")
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Simulator:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- clock -------------------------------------------------------------------------------------

    def now(self) -> datetime:
        with self._lock:
            offset = self._offset
        return datetime.now(UTC) + timedelta(seconds=offset)

    def advance_time(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    # -- set-up ------------------------------------------------------------------------------------

    def register_app(self, client_id: str, client_secret: str) -> None:
        self.identity.register_app(client_id, client_secret)

    def add_practice(self, practice: Practice) -> None:
        with self._lock:
            if practice.tenant_id in self._tenants:
                raise ValueError(f"tenant {practice.tenant_id} already added")
            practice.clock = self.now
            self._tenants[practice.tenant_id] = _Tenant(
                practice.tenant_id, "PRACTICEMANAGER", self.now(), practice=practice
            )

    def add_organisation(self, name: str) -> str:
        tenant_id = str(uuidlib.uuid4())
        with self._lock:
            self._tenants[tenant_id] = _Tenant(tenant_id, "ORGANISATION", self.now(), org_name=name)
        return tenant_id

    def practice(self, tenant_id: str) -> Practice:
        with self._lock:
            tenant = self._tenants.get(tenant_id)
        if tenant is None or tenant.practice is None:
            raise KeyError(f"no practice {tenant_id}")
        return tenant.practice

    @property
    def practices(self) -> list[Practice]:
        with self._lock:
            return [t.practice for t in self._tenants.values() if t.practice is not None]

    def set_consenting_user(self, name: str, email: str) -> None:
        self.identity.set_user(name, email)

    def consent_to(self, tenant_ids: list[str] | None) -> None:
        """What the admin allows at the next consents: only these tenants (say, an organisation
        without Practice Manager, or none), or (None, the default) every tenant held here."""
        self.identity.consent_to(tenant_ids)

    def issue_tokens(self, client_id: str, scope: str = FULL_SCOPE) -> dict[str, Any]:
        """A fresh grant, answered as the token endpoint answers the code grant (id_token included)."""
        return self.identity.issue(client_id, self.now(), scope)

    def expire_access_tokens(self) -> None:
        self.identity.expire_access_tokens(self.now())

    def revoke_all(self) -> None:
        self.identity.revoke_all()

    # -- call record -------------------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, fragment: str) -> list[Call]:
        return [call for call in self.calls if fragment in call.path]

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # -- serving -----------------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        tenant_id = handler.headers.get("xero-tenant-id")
        try:
            answer = self._route(handler, path, query, body)
        except Exception as error:
            # A bug in the simulator must read as one in a test, not as a silent hang-up.
            traceback.print_exc()
            answer = _gateway(500, "Simulator error", repr(error))
        # Recorded before the answer is written: a client that has read the last byte may look
        # at the call log at once, and must find its call there.
        with self._lock:
            status = answer.status if answer is not None else 0
            self._calls.append(Call(handler.command, path, query, tenant_id, status, self.now()))
        try:
            if answer is None:
                handler.close_connection = True
            else:
                self._write(handler, answer)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def _write(self, handler: BaseHTTPRequestHandler, answer: _Answer) -> None:
        if answer.drip is not None and answer.drip_headers:
            self._write_headers_drip(handler, answer, *answer.drip)
            return
        handler.send_response(answer.status)
        handler.send_header("Content-Type", answer.content_type)
        for name, value in (answer.headers or {}).items():
            handler.send_header(name, value)
        if answer.drip is not None:
            self._write_drip(handler, answer.body, *answer.drip)
            return
        if isinstance(answer.body, bytes):
            handler.send_header("Content-Length", str(len(answer.body)))
            handler.end_headers()
            handler.wfile.write(answer.body)
            return
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        buffered: list[bytes] = []
        size = 0
        for piece in answer.body:
            data = piece.encode("utf-8")
            buffered.append(data)
            size += len(data)
            if size >= _CHUNK:
                self._chunk(handler, b"".join(buffered))
                buffered, size = [], 0
        if size:
            self._chunk(handler, b"".join(buffered))
        handler.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def _chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_headers_drip(
        self, handler: BaseHTTPRequestHandler, answer: _Answer, size: int, every: float
    ) -> None:
        """The status line and headers ``size`` bytes every ``every`` seconds (each read of them
        comes well inside a per-read timeout), then the body at once."""
        body = answer.body if isinstance(answer.body, bytes) else "".join(answer.body).encode("utf-8")
        lines = [f"{handler.protocol_version} {answer.status} {handler.responses[answer.status][0]}"]
        fields = {
            "Content-Type": answer.content_type,
            **(answer.headers or {}),
            "Content-Length": str(len(body)),
        }
        lines += [f"{name}: {value}" for name, value in fields.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        for start in range(0, len(head), size):
            if start:
                time.sleep(every)
            handler.wfile.write(head[start : start + size])
            handler.wfile.flush()
        handler.wfile.write(body)

    def _write_drip(
        self, handler: BaseHTTPRequestHandler, body: bytes | Iterable[str], size: int, every: float
    ) -> None:
        """A slow-drip answer: the headers at once, then ``size`` bytes every ``every`` seconds,
        each flushed as its own chunk; a reader that gives up ends it (a broken pipe)."""
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        pending = body if isinstance(body, bytes) else "".join(body).encode("utf-8")
        for start in range(0, len(pending), size):
            if start:
                time.sleep(every)
            self._chunk(handler, pending[start : start + size])
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")

    def _route(
        self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, str], body: bytes
    ) -> _Answer | None:
        xpm = path.startswith(XPM_PREFIX)
        fault = self.faults.take(path, GATEWAY_FAULTS if xpm else GATEWAY_FAULTS | _SLOW_FAULTS)
        if fault is not None:
            if fault.kind == "slow":
                time.sleep(float(fault.params.get("seconds", 1.0)))
            else:
                if fault.kind == "token_expired":
                    # As at Xero: the token refused as expired stays so for every later call.
                    _, _, token = handler.headers.get("Authorization", "").partition(" ")
                    self.identity.expire_access_token(token.strip(), self.now())
                return self._gateway_fault(fault, path)
        command = handler.command
        if path == "/identity/connect/authorize" and command == "GET":
            return self._authorize(query)
        if path == "/connect/token" and command == "POST":
            return self._token(handler, body)
        if path == "/connect/revocation" and command == "POST":
            return self._revocation(handler, body)
        if path == "/connections" and command == "GET":
            return self._connections(handler)
        if xpm and command == "GET":
            return self._xpm(handler, path, query)
        return _gateway(404, "NotFound", f"No route for {command} {path}")

    def _gateway_fault(self, fault: Fault, path: str) -> _Answer | None:
        if fault.kind == "drop":
            return None
        if fault.kind == "unavailable":
            return _gateway(503, "Service Unavailable", "The service is temporarily unavailable")
        if fault.kind == "server_error":
            return _gateway(500, "Internal Server Error", "An unexpected error occurred")
        if fault.kind == "token_expired":
            return _unauthorized(expired=True)
        if fault.kind == "wrong_tenant":
            return _gateway(403, "Forbidden", "AuthenticationUnsuccessful")
        retry_after = str(fault.params.get("retry_after", 1))
        problem = str(fault.params.get("problem", "minute"))
        headers = {"Retry-After": retry_after, "X-Rate-Limit-Problem": problem}
        if path.startswith(XPM_PREFIX):
            headers.update(self.limits.remaining(None, self.now().timestamp()))
            headers["X-MinLimit-Remaining" if problem == "minute" else "X-DayLimit-Remaining"] = "0"
        return _gateway(429, "Too Many Requests", f"Rate limit exceeded: {problem}", headers)

    # -- identity ----------------------------------------------------------------------------------

    def _authorize(self, query: dict[str, str]) -> _Answer:
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        if not self.identity.knows_app(client_id) or not redirect_uri:
            page = (
                "<html><body><h1>Error</h1>"
                "<p>unauthorized_client: unknown client or redirect</p></body></html>"
            )
            return _Answer(400, page.encode(), "text/html; charset=utf-8")
        extra = {"state": query["state"]} if "state" in query else {}
        separator = "&" if "?" in redirect_uri else "?"
        if self.faults.take("/identity/connect/authorize", frozenset({"deny_consent"})) is not None:
            params = {"error": "access_denied", **extra}
        elif query.get("response_type") != "code":
            params = {"error": "unsupported_response_type", **extra}
        elif not self._pkce_acceptable(query):
            params = {"error": "invalid_request", **extra}
        else:
            scope = query.get("scope") or FULL_SCOPE
            challenge = query.get("code_challenge")
            code = self.identity.new_code(
                client_id, redirect_uri, scope, self.now(), code_challenge=challenge
            )
            params = {"code": code, "scope": scope, **extra, "session_state": uuidlib.uuid4().hex}
        location = redirect_uri + separator + urlencode(params)
        return _Answer(302, b"", "text/html; charset=utf-8", {"Location": location})

    def _pkce_acceptable(self, query: dict[str, str]) -> bool:
        """S256 only, as Xero: a challenge of the right shape with its method, or (when the
        simulator does not ask for PKCE) none at all."""
        challenge = query.get("code_challenge")
        if challenge is None:
            return "code_challenge_method" not in query and not self.identity.require_pkce
        # An S256 challenge is the base64url of 32 bytes: 43 characters, no padding.
        return (
            query.get("code_challenge_method") == "S256" and CODE_VERIFIER_SHAPE.match(challenge) is not None
        )

    @staticmethod
    def _basic(handler: BaseHTTPRequestHandler) -> tuple[str | None, str | None]:
        header = handler.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None, None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        client_id, _, secret = decoded.partition(":")
        return client_id, secret

    def _token(self, handler: BaseHTTPRequestHandler, body: bytes) -> _Answer | None:
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        try:
            client_id = self.identity.check_client(*self._basic(handler))
            if self.faults.take("/connect/token", frozenset({"invalid_grant"})) is not None:
                raise IdentityError("invalid_grant")
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                tokens = self.identity.exchange_code(
                    client_id,
                    form.get("code", ""),
                    form.get("redirect_uri", ""),
                    self.now(),
                    code_verifier=form.get("code_verifier"),
                )
            elif grant_type == "refresh_token":
                tokens = self.identity.refresh(client_id, form.get("refresh_token", ""), self.now())
            else:
                raise IdentityError("unsupported_grant_type")
        except IdentityError as error:
            return _json(error.status, {"error": error.error})
        if self.faults.take("/connect/token", frozenset({"lose_answer"})) is not None:
            return None  # done at Xero, never heard of by the caller
        return _json(200, tokens, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _revocation(self, handler: BaseHTTPRequestHandler, body: bytes) -> _Answer:
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        try:
            client_id = self.identity.check_client(*self._basic(handler))
        except IdentityError as error:
            return _json(error.status, {"error": error.error})
        self.identity.revoke(client_id, form.get("token", ""))
        return _Answer(200, b"")

    def _bearer(self, handler: BaseHTTPRequestHandler) -> tuple[Grant | None, _Answer | None]:
        header = handler.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None, _unauthorized(expired=False)
        state, grant = self.identity.check_access(token.strip(), self.now())
        if state == AccessCheck.EXPIRED:
            return None, _unauthorized(expired=True)
        if state != AccessCheck.OK or grant is None:
            return None, _unauthorized(expired=False)
        return grant, None

    def _connections(self, handler: BaseHTTPRequestHandler) -> _Answer:
        grant, refusal = self._bearer(handler)
        if refusal is not None or grant is None:
            return refusal or _unauthorized(expired=False)
        with self._lock:
            tenants = [t for t in self._tenants.values() if _granted(grant, t.tenant_id)]
        return _json(
            200,
            [
                {
                    "id": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{grant.grant_id}/{t.tenant_id}")),
                    "authEventId": grant.auth_event_id,
                    "tenantId": t.tenant_id,
                    "tenantType": t.tenant_type,
                    "tenantName": t.name,
                    "createdDateUtc": _xpm_utc(max(t.added_at, grant.created_at)),
                    "updatedDateUtc": _xpm_utc(max(t.added_at, grant.created_at)),
                }
                for t in tenants
            ],
        )

    # -- XPM ---------------------------------------------------------------------------------------

    def _xpm(self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, str]) -> _Answer:
        tenant_id = handler.headers.get("xero-tenant-id")
        answer = self._xpm_guarded(handler, path, query, tenant_id)
        limits = self.limits.remaining(tenant_id, self.now().timestamp())
        answer.headers = {**limits, **(answer.headers or {})}
        return answer

    def _xpm_guarded(
        self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, str], tenant_id: str | None
    ) -> _Answer:
        grant, refusal = self._bearer(handler)
        if refusal is not None or grant is None:
            return refusal or _unauthorized(expired=False)
        with self._lock:
            tenant = self._tenants.get(tenant_id or "")
        if tenant is None or tenant.practice is None or not _granted(grant, tenant.tenant_id):
            return _gateway(403, "Forbidden", "AuthenticationUnsuccessful")
        needed = "practicemanager.staff.read" if "/staff.api/" in path else "practicemanager.client.read"
        if needed not in grant.scope.split():
            return _gateway(403, "Forbidden", "AuthorizationUnsuccessful")
        admission = self.limits.admit(tenant.tenant_id, self.now().timestamp())
        if not admission.allowed:
            return _gateway(
                429,
                "Too Many Requests",
                f"Rate limit exceeded: {admission.problem}",
                {"Retry-After": str(admission.retry_after), "X-Rate-Limit-Problem": str(admission.problem)},
            )
        try:
            fault = self.faults.take(path, CONTENT_FAULTS)
            if fault is not None and fault.kind == "slow":
                time.sleep(float(fault.params.get("seconds", 1.0)))
                fault = self.faults.take(path, CONTENT_FAULTS - _SLOW_FAULTS - _DRIP_FAULTS)
            if fault is not None and fault.kind == "drip":
                answer = self._xpm_answer(tenant.practice, path, query, None)
                if answer.status == 200:
                    answer.drip = (
                        int(fault.params.get("bytes", _CHUNK)),
                        float(fault.params.get("every", 2.0)),
                    )
                    answer.drip_headers = fault.params.get("part") == "headers"
                return answer
            return self._xpm_answer(tenant.practice, path, query, fault)
        finally:
            # A streamed body is written after this returns; XPM counts a call as done once answered,
            # and a slot held across the write would let a slow reader starve its own tenant.
            self.limits.release(tenant.tenant_id)

    def _xpm_answer(
        self, practice: Practice, path: str, query: dict[str, str], fault: Fault | None
    ) -> _Answer:
        endpoint = path[len(XPM_BASE) :] if path.startswith(XPM_BASE) else ""
        if endpoint == "staff.api/list":
            shape = ("List", "StaffList", "Staff")
        elif endpoint == "client.api/list":
            shape = ("List", "Clients", "Client")
        elif endpoint.startswith("client.api/get/"):
            shape = ("Get", "", "Client")
        else:
            return _gateway(404, "NotFound", f"No XPM method at {path}")
        if fault is not None and fault.kind != "truncated":
            return self._content_fault(fault, shape)
        staff_names = {member.uuid: member.name for member in practice.staff}
        answer: _Answer
        if endpoint == "staff.api/list":
            answer = _Answer(200, render.staff_list(list(practice.staff)), _XML)
        elif endpoint == "client.api/list":
            detailed = query.get("detailed", "").lower() == "true"
            clients = list(practice.clients)
            since_text = query.get("modifiedsince")
            if since_text is not None:
                try:
                    since = datetime.strptime(since_text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
                except ValueError:
                    return _xml(render.status_error("List", f"Invalid modifiedsince '{since_text}'"))
                clients = [c for c in clients if c.modified_at >= since]
            web_url = practice.web_url if practice.list_web_urls else None
            answer = _Answer(
                200, render.client_list(clients, staff_names, detailed=detailed, web_url=web_url), _XML
            )
        else:
            # XPM answers an unknown client with HTTP 200 and Status ERROR, not with a 404.
            client = practice.find_client(endpoint[len("client.api/get/") :])
            if client is None:
                return _xml(render.status_error("Get", "Client not found"))
            answer = _xml(render.client_get(client, staff_names, practice.web_url(client)))
        if fault is not None:
            return _truncate(answer)
        return answer

    @staticmethod
    def _content_fault(fault: Fault, shape: tuple[str, str, str]) -> _Answer:
        method, wrapper, item = shape
        if fault.kind == "status_error":
            description = str(fault.params.get("description", "An error has occurred"))
            return _xml(render.status_error(method, description))
        if fault.kind == "malformed":
            return _Answer(200, b"upstream connect error or disconnect/reset before headers", _XML)
        open_list = f"<{wrapper}>" if wrapper else ""
        close_list = f"</{wrapper}>" if wrapper else ""
        status = f'<Response api-method="{method}"><Status>OK</Status>'
        record = f"{open_list}<{item}><UUID>{uuidlib.uuid4()}</UUID>"
        head = status + record
        tail = f"</{item}>{close_list}</Response>"
        if fault.kind == "xxe":
            doctype = '<!DOCTYPE Response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            return _xml(f'<?xml version="1.0" encoding="utf-8"?>{doctype}{head}<Name>&xxe;</Name>{tail}')
        if fault.kind == "billion_laughs":
            entities = ['<!ENTITY lol0 "lol">'] + [
                f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10}">' for n in range(1, 10)
            ]
            doctype = "<!DOCTYPE Response [" + "".join(entities) + "]>"
            return _xml(f'<?xml version="1.0"?>{doctype}{head}<Name>&lol9;</Name>{tail}')
        size = int(float(fault.params.get("mb", 5)) * 1024 * 1024)
        if fault.params.get("place") == "header":
            # Outside any record: a broken or hostile answer as a whole.
            return _Answer(200, _oversized(status + "<Detail>", "</Detail>", size, then=record + tail), _XML)
        # In a record's Name: that record fails alone, as too large for Active.
        return _Answer(200, _oversized(head + "<Name>", "</Name>", size, then=tail), _XML)


def _granted(grant: Grant, tenant_id: str) -> bool:
    return grant.tenant_ids is None or tenant_id in grant.tenant_ids


def _oversized(opening: str, closing: str, size: int, *, then: str) -> Iterator[str]:
    """``size`` characters of text between ``opening`` and ``closing``, streamed; ``then`` ends it."""
    yield opening
    block = "A" * _CHUNK
    left = size
    while left > 0:
        yield block[: min(left, _CHUNK)]
        left -= _CHUNK
    yield closing + then


def _truncate(answer: _Answer) -> _Answer:
    body = answer.body if isinstance(answer.body, bytes) else "".join(answer.body).encode("utf-8")
    # Cut a few characters into a Name past the middle, so the document breaks inside an element.
    middle = body.find(b"<Name>", len(body) // 2)
    if middle < 0:
        middle = body.find(b"<Name>")
    cut = middle + len(b"<Name>") + 2 if middle >= 0 else len(body) // 2
    return _Answer(200, body[:cut], _XML, answer.headers)


def start_simulator(host: str = "127.0.0.1", port: int = 0) -> Simulator:
    """A running simulator on loopback (port 0: any free port); stop it with ``sim.stop()``."""
    return Simulator(host, port).start()
