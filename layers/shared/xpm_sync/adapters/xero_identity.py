"""Xero OAuth 2.0 (SPEC A6, A8): authorize URL, code exchange, refresh, revoke and connections.

Nothing here stores tokens (that is ``xpm_sync.adapters.tokens``) and no exception message carries a token:
messages name the endpoint, the HTTP status and Xero's short error code only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from botocore.exceptions import ClientError

from xpm_sync.domain.clock import Clock
from xpm_sync.observability import logger

SCOPES = "openid profile email offline_access practicemanager.client.read practicemanager.staff.read"

PRACTICE_MANAGER = "PRACTICEMANAGER"

# Xero's error codes are short snake_case words; anything else in the field is not echoed, in case
# a misbehaving server reflects the request (and so a token) back in it.
_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")

# The access token's lifetime assumed when a token answer has no readable ``expires_in``. Xero's are
# 30 minutes, but an answer without the field says nothing for sure, so assume much less. Not 0:
# the token store checks the expiry before every XPM call, so "expired now" would spend a refresh
# (and a rotation) on each call. Five minutes is more than the store's refresh margin (2 minutes), so
# the token is used for a few minutes and then refreshed; if it dies sooner, XPM's 401 forces a
# refresh anyway. What must not happen is refusing the answer: on a refresh Xero has already rotated
# the refresh token, and refusing would lose it.
FALLBACK_EXPIRES_IN = 5 * 60

# PKCE (RFC 7636): 48 random bytes make a 64-character verifier, within the 43-128 it allows.
_VERIFIER_BYTES = 48
PKCE_METHOD = "S256"


def new_code_verifier() -> str:
    """A fresh PKCE code verifier: kept server-side with the state, sent only to the token endpoint."""
    return secrets.token_urlsafe(_VERIFIER_BYTES)


def s256_challenge(code_verifier: str) -> str:
    """The S256 ``code_challenge`` of a verifier: BASE64URL(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class AppCredentials:
    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: int
    id_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Connection:
    tenant_id: str
    tenant_name: str | None
    tenant_type: str


@dataclass(frozen=True)
class XeroUser:
    name: str | None
    email: str | None


class XeroIdentityError(Exception):
    """Xero's identity service or connections endpoint failed. Never carries token text."""


class InvalidGrant(XeroIdentityError):
    """The code or refresh token was refused (used, expired, revoked or rotated away)."""


class IdentityUnreachable(XeroIdentityError):
    """No answer came (a timeout, a dropped connection), or one that may pass (a 5xx, a 429): the
    request may have been carried out at Xero all the same."""


class InvalidClient(XeroIdentityError):
    """Xero does not accept the app's client id and secret."""


class RevocationRefused(XeroIdentityError):
    """The revocation endpoint refused the request itself (a 400 with an OAuth error that is
    neither about the token nor the app): sent again, it would be refused again."""


class AppCredentialsUnavailable(XeroIdentityError):
    """The app's own credentials secret could not be read or is not in its shape: an operator's fix,
    nothing Xero said."""


class AccessDenied(XeroIdentityError):
    """The connections endpoint refused the access token (401): refresh, or reconnect."""


def load_app_credentials(secrets_client: Any, secret_id: str) -> AppCredentials:
    """The Xero app's client id and secret from the secret ``{"client_id", "client_secret"}``."""
    try:
        answer = secrets_client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "unknown error")
        raise AppCredentialsUnavailable(f"secret {secret_id} could not be read ({code})") from None
    problem = AppCredentialsUnavailable(
        f"secret {secret_id} is not JSON with string client_id and client_secret"
    )
    try:
        data = json.loads(answer["SecretString"])
    except (KeyError, ValueError):
        raise problem from None
    client_id = data.get("client_id") if isinstance(data, dict) else None
    client_secret = data.get("client_secret") if isinstance(data, dict) else None
    if not isinstance(client_id, str) or not client_id:
        raise problem
    if not isinstance(client_secret, str) or not client_secret:
        raise problem
    return AppCredentials(client_id=client_id, client_secret=client_secret)


class XeroIdentity:
    def __init__(
        self,
        *,
        login_url: str,
        identity_url: str,
        api_url: str,
        credentials: AppCredentials,
        http: httpx.Client,
        clock: Clock,
    ) -> None:
        self._login_url = login_url.rstrip("/")
        self._identity_url = identity_url.rstrip("/")
        self._api_url = api_url.rstrip("/")
        self._credentials = credentials
        self._http = http
        self._clock = clock

    def authorize_url(self, *, redirect_uri: str, state: str, code_challenge: str) -> str:
        """Where the admin's browser signs in; every request carries a PKCE S256 challenge (SPEC
        B4), so a code intercepted on its way back is useless without the verifier we keep."""
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._credentials.client_id,
                "redirect_uri": redirect_uri,
                "scope": SCOPES,
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": PKCE_METHOD,
            },
            quote_via=quote,
        )
        return f"{self._login_url}/identity/connect/authorize?{query}"

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> TokenSet:
        return self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            }
        )

    def refresh(self, refresh_token: str, *, timeout: float | None = None) -> TokenSet:
        """New tokens for the refresh token; ``timeout``, when given, bounds each read of the answer
        (instead of the client's own timeout)."""
        return self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}, timeout=timeout
        )

    def revoke(self, refresh_token: str) -> None:
        response = self._send(
            "POST",
            f"{self._identity_url}/connect/revocation",
            what="revocation",
            data={"token": refresh_token},
            auth=self._basic_auth(),
        )
        if not response.is_success:
            error = _identity_error("revocation", response)
            if type(error) is XeroIdentityError and _refused_for_good(response):
                raise RevocationRefused(str(error))
            raise error

    def connections(self, access_token: str) -> list[Connection]:
        response = self._send(
            "GET",
            f"{self._api_url}/connections",
            what="connections",
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        # Only 401 is Xero refusing the token (its documented answer here). A 403 on an endpoint
        # that names no tenant is a gateway's or a firewall's, and may pass: taken as a refusal,
        # it would send the firm to needs_reconnect for good.
        if response.status_code == 401:
            raise AccessDenied(f"Xero connections answered {response.status_code}")
        if not response.is_success:
            raise _identity_error("connections", response)
        body = _json_body(response, "connections")
        if not isinstance(body, list):
            raise XeroIdentityError("Xero connections answered something other than a list")
        found: list[Connection] = []
        for item in body:
            if not isinstance(item, dict) or item.get("tenantType") != PRACTICE_MANAGER:
                continue
            tenant_id = item.get("tenantId")
            if not isinstance(tenant_id, str) or not tenant_id:
                raise XeroIdentityError("Xero connections answered a tenant without a tenantId")
            if any(known.tenant_id == tenant_id for known in found):
                continue  # one practice, however many connections list it (SPEC A6 preselects it)
            name = item.get("tenantName")
            found.append(
                Connection(
                    tenant_id=tenant_id,
                    tenant_name=name if isinstance(name, str) else None,
                    tenant_type=PRACTICE_MANAGER,
                )
            )
        return found

    def _basic_auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self._credentials.client_id, self._credentials.client_secret)

    def _token_request(self, form: dict[str, str], *, timeout: float | None = None) -> TokenSet:
        response = self._send(
            "POST",
            f"{self._identity_url}/connect/token",
            what="token",
            data=form,
            auth=self._basic_auth(),
            **({"timeout": timeout} if timeout is not None else {}),
        )
        if not response.is_success:
            raise _identity_error("token", response)
        body = _json_body(response, "token")
        if not isinstance(body, dict):
            raise XeroIdentityError("Xero token endpoint answered something other than an object")
        access_token = body.get("access_token")
        refresh_token = body.get("refresh_token")
        expires_in = body.get("expires_in")
        id_token = body.get("id_token")
        if not isinstance(access_token, str) or not access_token:
            raise XeroIdentityError("Xero token endpoint answered without an access_token")
        # offline_access is one of our scopes, so a missing refresh token means the grant cannot
        # be kept alive: better to fail the connect than to store a connection that dies in 30 min.
        # On a refresh Xero always rotates the refresh token; an answer without one leaves nothing
        # to store, and the token on record (honoured 30 more minutes) is the best we have.
        if not isinstance(refresh_token, str) or not refresh_token:
            raise XeroIdentityError("Xero token endpoint answered without a refresh_token")
        lifetime = _seconds(expires_in)
        if lifetime is None:
            logger.warning(
                "Xero token answer without a usable expires_in; assuming a short lifetime",
                extra={"grant_type": form["grant_type"], "assumed_seconds": FALLBACK_EXPIRES_IN},
            )
            lifetime = FALLBACK_EXPIRES_IN
        now = int(self._clock.now().timestamp())
        return TokenSet(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_at=now + lifetime,
            id_token=id_token if isinstance(id_token, str) and id_token else None,
        )

    def _send(self, method: str, url: str, *, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            # Only the exception's type: httpx messages can quote the request, and the request
            # carries a code or token in its body or headers.
            raise IdentityUnreachable(f"Xero {what} request failed: {type(exc).__name__}") from None


def _seconds(value: Any) -> int | None:
    """``expires_in`` as whole seconds: a number or a numeric string; None when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 1:
        return None
    return int(value)


def _json_body(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise XeroIdentityError(f"Xero {what} endpoint answered with invalid JSON") from None


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.match(code) else None


def _refused_for_good(response: httpx.Response) -> bool:
    # RFC 7009's own refusal: a 400 naming an OAuth error. Anything else (a gateway's 403, a 404 from
    # a wrong URL, a 429) may pass, so the tokens are kept for the admin's retry.
    return response.status_code == 400 and _error_code(response) is not None


def _identity_error(what: str, response: httpx.Response) -> XeroIdentityError:
    code = _error_code(response)
    message = f"Xero {what} endpoint answered {response.status_code}" + (f" ({code})" if code else "")
    if code == "invalid_grant":
        return InvalidGrant(message)
    if code in ("invalid_client", "unauthorized_client"):
        return InvalidClient(message)
    if response.status_code >= 500 or response.status_code == 429:
        return IdentityUnreachable(message)
    return XeroIdentityError(message)


def user_from_id_token(id_token: str | None) -> XeroUser:
    """Who allowed access, from the OpenID Connect id_token (SPEC A6: shown as "connected by").

    The signature is not checked: the token came straight from Xero's token endpoint over TLS in
    answer to our own authenticated request, and OpenID Connect Core 3.1.3.7 allows a client to
    rely on the TLS server validation instead of the token's signature in that case. Never use
    this on an id_token that arrived any other way.
    """
    empty = XeroUser(name=None, email=None)
    if not id_token:
        return empty
    parts = id_token.split(".")
    if len(parts) != 3:
        return empty
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError):
        return empty
    if not isinstance(claims, dict):
        return empty
    name = _claim(claims, "name")
    if name is None:
        given = _claim(claims, "given_name")
        family = _claim(claims, "family_name")
        name = " ".join(part for part in (given, family) if part) or None
    return XeroUser(name=name, email=_claim(claims, "email"))


def _claim(claims: dict[str, Any], key: str) -> str | None:
    value = claims.get(key)
    if not isinstance(value, str):
        return None
    return value.strip() or None
