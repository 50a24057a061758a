"""Xero identity as the simulator plays it: apps, authorization codes, grants and their tokens.

Time is always passed in (the simulator's clock), so tests can move past expiry and grace windows.

PKCE (RFC 7636) as Xero checks it: the authorize request's ``code_challenge`` (S256 only) is kept
with the code, and the token request must carry the ``code_verifier`` that hashes to it, else
``invalid_grant``; a verifier sent for a code issued without a challenge is refused too (RFC 9700
§4.8.2, the downgrade). The simulator asks every app for PKCE (``require_pkce``), so a client that
stops sending it fails every connect instead of passing unnoticed.

What a consent grants: every tenant the simulator holds (the default), or, after
``consent_to(...)``, only those tenants (say, an accounting organisation without Practice Manager).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

FULL_SCOPE = "openid profile email offline_access practicemanager.client.read practicemanager.staff.read"
ACCESS_LIFETIME = timedelta(minutes=30)
CODE_LIFETIME = timedelta(minutes=5)
REFRESH_GRACE = timedelta(minutes=30)
REFRESH_IDLE_LIMIT = timedelta(days=60)
# RFC 7636 §4.1: 43 to 128 unreserved characters.
CODE_VERIFIER_SHAPE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def s256(code_verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class IdentityError(Exception):
    """An OAuth error answer: ``error`` is the RFC 6749 code, ``status`` the HTTP status."""

    def __init__(self, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


@dataclass(frozen=True)
class User:
    name: str
    email: str
    xero_userid: str

    @property
    def given_name(self) -> str:
        return self.name.rsplit(None, 1)[0] if " " in self.name.strip() else self.name.strip()

    @property
    def family_name(self) -> str:
        parts = self.name.rsplit(None, 1)
        return parts[1] if len(parts) == 2 else ""


@dataclass
class Grant:
    grant_id: str
    client_id: str
    user: User
    scope: str
    created_at: datetime
    auth_event_id: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    revoked: bool = False
    # The tenants the consent connected; None: every tenant the simulator holds, then and later.
    tenant_ids: frozenset[str] | None = None


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scope: str
    user: User
    expires_at: datetime
    code_challenge: str | None = None
    tenant_ids: frozenset[str] | None = None
    used: bool = False


@dataclass
class _Refresh:
    grant_id: str
    issued_at: datetime
    superseded_at: datetime | None = None


@dataclass
class _Access:
    grant_id: str
    expires_at: datetime


def _verifier_matches(code_challenge: str | None, code_verifier: str | None) -> bool:
    """RFC 7636 §4.6: the verifier must hash to the challenge the code was issued with; a code
    issued without one takes no verifier (a verifier then means a downgraded request)."""
    if code_challenge is None:
        return code_verifier is None
    if code_verifier is None or not CODE_VERIFIER_SHAPE.match(code_verifier):
        return False
    return secrets.compare_digest(s256(code_verifier), code_challenge)


class AccessCheck:
    OK = "ok"
    EXPIRED = "expired"
    INVALID = "invalid"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Identity:
    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._lock = threading.RLock()
        self._apps: dict[str, str] = {}
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, Grant] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._access: dict[str, _Access] = {}
        self.user = User("Alex Morgan", "alex.morgan@demopractice.com.au", str(uuidlib.uuid4()))
        self.require_pkce = True
        self._consent_tenant_ids: frozenset[str] | None = None

    def register_app(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self._apps[client_id] = client_secret

    def knows_app(self, client_id: str) -> bool:
        with self._lock:
            return client_id in self._apps

    def check_client(self, client_id: str | None, client_secret: str | None) -> str:
        with self._lock:
            if client_id is None or self._apps.get(client_id) != client_secret:
                raise IdentityError("invalid_client", 401)
            return client_id

    def set_user(self, name: str, email: str) -> None:
        with self._lock:
            self.user = User(name, email, str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"xero-user:{email}")))

    def consent_to(self, tenant_ids: list[str] | None) -> None:
        """What the next consents grant: these tenants only, or (None) every tenant, as by default."""
        with self._lock:
            self._consent_tenant_ids = frozenset(tenant_ids) if tenant_ids is not None else None

    def new_code(
        self, client_id: str, redirect_uri: str, scope: str, now: datetime, code_challenge: str | None = None
    ) -> str:
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _Code(
                client_id,
                redirect_uri,
                scope,
                self.user,
                now + CODE_LIFETIME,
                code_challenge=code_challenge,
                tenant_ids=self._consent_tenant_ids,
            )
        return code

    def exchange_code(
        self, client_id: str, code: str, redirect_uri: str, now: datetime, code_verifier: str | None = None
    ) -> dict[str, Any]:
        with self._lock:
            record = self._codes.get(code)
            if (
                record is None
                or record.used
                or record.client_id != client_id
                or record.redirect_uri != redirect_uri
                or now >= record.expires_at
                or not _verifier_matches(record.code_challenge, code_verifier)
            ):
                raise IdentityError("invalid_grant")
            record.used = True
            grant = Grant(
                str(uuidlib.uuid4()), client_id, record.user, record.scope, now, tenant_ids=record.tenant_ids
            )
            self._grants[grant.grant_id] = grant
            return self._tokens(grant, now, with_id_token=True)

    def issue(self, client_id: str, now: datetime, scope: str = FULL_SCOPE) -> dict[str, Any]:
        with self._lock:
            if client_id not in self._apps:
                raise IdentityError("invalid_client", 401)
            grant = Grant(str(uuidlib.uuid4()), client_id, self.user, scope, now)
            self._grants[grant.grant_id] = grant
            return self._tokens(grant, now, with_id_token=True)

    def refresh(self, client_id: str, refresh_token: str, now: datetime) -> dict[str, Any]:
        with self._lock:
            record = self._refresh.get(refresh_token)
            if record is None:
                raise IdentityError("invalid_grant")
            grant = self._grants[record.grant_id]
            if grant.revoked or grant.client_id != client_id:
                raise IdentityError("invalid_grant")
            if record.superseded_at is not None and now >= record.superseded_at + REFRESH_GRACE:
                raise IdentityError("invalid_grant")
            if now >= record.issued_at + REFRESH_IDLE_LIMIT:
                raise IdentityError("invalid_grant")
            if record.superseded_at is None:
                record.superseded_at = now
            return self._tokens(grant, now, with_id_token=False)

    def revoke(self, client_id: str, token: str) -> None:
        # RFC 7009: an unknown token is not an error, the answer is 200 either way.
        with self._lock:
            record: _Refresh | _Access | None = self._refresh.get(token) or self._access.get(token)
            if record is None:
                return
            grant = self._grants[record.grant_id]
            if grant.client_id == client_id:
                grant.revoked = True

    @property
    def grants(self) -> list[Grant]:
        """Every grant issued so far, oldest first (tests look at which were revoked)."""
        with self._lock:
            return list(self._grants.values())

    def revoke_all(self) -> None:
        with self._lock:
            for grant in self._grants.values():
                grant.revoked = True

    def expire_access_tokens(self, now: datetime) -> None:
        with self._lock:
            for record in self._access.values():
                record.expires_at = min(record.expires_at, now)

    def expire_access_token(self, token: str, now: datetime) -> None:
        with self._lock:
            record = self._access.get(token)
            if record is not None:
                record.expires_at = min(record.expires_at, now)

    def check_access(self, token: str | None, now: datetime) -> tuple[str, Grant | None]:
        with self._lock:
            record = self._access.get(token or "")
            if record is None:
                return AccessCheck.INVALID, None
            grant = self._grants[record.grant_id]
            if grant.revoked:
                return AccessCheck.INVALID, None
            if now >= record.expires_at:
                return AccessCheck.EXPIRED, grant
            return AccessCheck.OK, grant

    def _tokens(self, grant: Grant, now: datetime, *, with_id_token: bool) -> dict[str, Any]:
        access = secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)
        self._access[access] = _Access(grant.grant_id, now + ACCESS_LIFETIME)
        self._refresh[refresh] = _Refresh(grant.grant_id, now)
        answer: dict[str, Any] = {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": int(ACCESS_LIFETIME.total_seconds()),
            "token_type": "Bearer",
            "scope": grant.scope,
        }
        if with_id_token:
            answer["id_token"] = self._id_token(grant, now)
        return answer

    def _id_token(self, grant: Grant, now: datetime) -> str:
        issued = int(now.timestamp())
        header = {"alg": "RS256", "kid": "xpm-sim", "typ": "JWT"}
        user = grant.user
        payload = {
            "nbf": issued,
            "exp": issued + 300,
            "iat": issued,
            "iss": self.issuer,
            "aud": grant.client_id,
            "sub": user.xero_userid.replace("-", ""),
            "auth_time": issued,
            "xero_userid": user.xero_userid,
            "global_session_id": grant.auth_event_id.replace("-", ""),
            "preferred_username": user.email,
            "email": user.email,
            "given_name": user.given_name,
            "family_name": user.family_name,
            "name": user.name,
            "amr": ["pwd"],
        }
        # Unsigned in substance: the sync reads the claims of a token it got straight from Xero over
        # TLS, so it never verifies the signature and the simulator need not produce a real one.
        return ".".join(
            (
                _b64(json.dumps(header, separators=(",", ":")).encode()),
                _b64(json.dumps(payload, separators=(",", ":")).encode()),
                _b64(secrets.token_bytes(32)),
            )
        )
