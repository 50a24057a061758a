"""What each route does (SPEC A6, B5): one object, built by the composition root, one method a route.

Handlers parse and shape; this decides. Every failure a caller can cause is an
``xpm_sync.domain.errors`` exception, which ``xpm_sync.api.http`` turns into the B5 error body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from xpm_sync.adapters.active_table import ActiveRepository, OfficeGone
from xpm_sync.adapters.config_table import NEW_CONFIG_DEFAULTS, ConfigRepository
from xpm_sync.adapters.oauth_states import InvalidState, StateStore
from xpm_sync.adapters.sync_log import RunLog
from xpm_sync.adapters.sync_queue import SyncQueue
from xpm_sync.adapters.tokens import NeedsReconnect, TokenStore
from xpm_sync.adapters.xero_identity import (
    AccessDenied,
    Connection,
    InvalidClient,
    InvalidGrant,
    XeroIdentity,
    XeroIdentityError,
    user_from_id_token,
)
from xpm_sync.api.caller import Caller
from xpm_sync.api.models import (
    ConfigBody,
    ConfigResponse,
    ConnectRequest,
    ConnectResponse,
    RunDetail,
    RunsPage,
    StartSyncResponse,
    Tenant,
    TenantsResponse,
    config_response,
    run_detail,
    run_out,
)
from xpm_sync.domain.clock import Clock, iso
from xpm_sync.domain.errors import (
    ConnectionBroken,
    InvalidCursor,
    InvalidValue,
    NotConfigured,
    NotConnected,
    NotFound,
    XeroUnavailable,
)
from xpm_sync.domain.firm import FirmConfig, tenant_change
from xpm_sync.observability import logger

CallbackError = Literal[
    "access_denied", "xero_error", "invalid_state", "missing_code", "exchange_failed", "connections_failed"
]
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_CODE_LENGTH = 2048
_MAX_CURSOR_LENGTH = 512
_NO_OFFICE = "default_office_code is not an office of this firm in Active."


@dataclass(frozen=True)
class CallbackQuery:
    code: str | None
    state: str | None
    error: str | None

    @classmethod
    def of(cls, *, code: list[str] | None, state: list[str] | None, error: list[str] | None) -> CallbackQuery:
        """From the query's values per name: a name given twice is ambiguous, so it counts as absent
        (an error given twice is still an error)."""

        def single(values: list[str] | None) -> str | None:
            return values[0] if values and len(values) == 1 else None

        return cls(code=single(code), state=single(state), error=error[0] if error else None)


def setup_page_url(frontend_url: str, **query: str) -> str:
    return f"{frontend_url.rstrip('/')}/admin/integrations/xpm?{urlencode(query)}"


def _preselected_tenant(connections: Sequence[Connection]) -> Connection | None:
    """SPEC A6: the Practice Manager connection when exactly one comes back. Of several, none,
    even one the admin chose before reconnecting: the admin must choose again."""
    return connections[0] if len(connections) == 1 else None


@dataclass
class IntegrationService:
    """The XPM integration as the REST API sees it: one method per route (SPEC B5).

    Built by ``xpm_sync.composition``; ``identity`` and ``tokens`` are made on first use (they read
    the app's secret), so routes that never talk to Xero never read it.
    """

    configs: ConfigRepository
    runs: RunLog
    queue: SyncQueue | None  # None for the OAuth function, which queues nothing
    states: StateStore
    active_for: Callable[[str], ActiveRepository]
    identity_factory: Callable[[], XeroIdentity]
    tokens_factory: Callable[[XeroIdentity], TokenStore]
    clock: Clock
    frontend_url: str
    # Xero's redirect URI (OAUTH_REDIRECT_URI): only the OAuth function connects.
    redirect_uri: str | None = None

    _identity: XeroIdentity | None = None
    _tokens: TokenStore | None = None

    @property
    def identity(self) -> XeroIdentity:
        if self._identity is None:
            self._identity = self.identity_factory()
        return self._identity

    @property
    def tokens(self) -> TokenStore:
        if self._tokens is None:
            self._tokens = self.tokens_factory(self.identity)
        return self._tokens

    # --- Connect (SPEC A6) ---------------------------------------------------------------------

    def start_connect(self, caller: Caller, request: ConnectRequest | None) -> ConnectResponse:
        # The firm's config item exists from the first connect with its B3 attributes; a name given
        # now is kept, and an absent one leaves the stored name alone.
        named = {"sync_name": request.sync_name} if request is not None and request.sync_name else {}
        self.configs.update(caller.firm_id, defaults=NEW_CONFIG_DEFAULTS, **named)
        if self.redirect_uri is None:
            raise RuntimeError("connecting needs OAUTH_REDIRECT_URI")
        state = self.states.issue(caller.firm_id, caller.user_sub)
        logger.info("xpm connect started", extra={"firm_id": caller.firm_id})
        return ConnectResponse(
            authorize_url=self.identity.authorize_url(redirect_uri=self.redirect_uri, state=state)
        )

    def complete_callback(self, query: CallbackQuery) -> str:
        """Where to send the browser: the setup page with ``connected=1`` or ``error=<code>``.

        Nothing is stored unless every step succeeded; the code, the state and the tokens are never
        logged nor put in the URL.
        """

        def failed(error: CallbackError) -> str:
            logger.warning("xpm connect callback refused", extra={"reason": error})
            return setup_page_url(self.frontend_url, error=error)

        if query.error is not None:
            # Burn the state too, so the same link cannot be replayed with a code later.
            # An unknown state leaves nothing to burn, and the answer is the same error either way.
            with suppress(InvalidState):
                self.states.consume(query.state)
            return failed("access_denied" if query.error == "access_denied" else "xero_error")
        try:
            grant = self.states.consume(query.state)
        except InvalidState:
            return failed("invalid_state")
        if not query.code or len(query.code) > _MAX_CODE_LENGTH or self.redirect_uri is None:
            return failed("missing_code")
        identity = self.identity
        try:
            token_set = identity.exchange_code(code=query.code, redirect_uri=self.redirect_uri)
        except XeroIdentityError as exc:
            logger.warning("xpm code exchange failed", extra={"firm_id": grant.firm_id, "detail": str(exc)})
            return failed("exchange_failed")
        try:
            connections = identity.connections(token_set.access_token)
        except XeroIdentityError as exc:
            logger.warning("xpm connections failed", extra={"firm_id": grant.firm_id, "detail": str(exc)})
            self._revoke_unused_grant(token_set.refresh_token, grant.firm_id)
            return failed("connections_failed")

        self.tokens.save(grant.firm_id, token_set)
        user = user_from_id_token(token_set.id_token)
        current = self.configs.get_or_new(grant.firm_id)
        tenant = _preselected_tenant(connections)
        self.configs.update(
            grant.firm_id,
            defaults=NEW_CONFIG_DEFAULTS,
            status="connected",
            connected_by_name=user.name,
            connected_by_email=user.email,
            connected_at=iso(self.clock.now()),
            tenant_id=tenant.tenant_id if tenant else None,
            tenant_name=tenant.tenant_name if tenant else None,
            **tenant_change(current, tenant.tenant_id if tenant else None),
        )
        logger.info(
            "xpm connected",
            extra={"firm_id": grant.firm_id, "tenants": len(connections), "preselected": tenant is not None},
        )
        return setup_page_url(self.frontend_url, connected="1")

    def _revoke_unused_grant(self, refresh_token: str, firm_id: str) -> None:
        """A grant that is not stored serves nobody: end it at Xero rather than leave it alive there
        (the admin connects again anyway). Best effort: the callback's answer does not depend on it."""
        try:
            self.identity.revoke(refresh_token)
        except XeroIdentityError as exc:
            logger.warning(
                "xpm revoke of an unused grant failed", extra={"firm_id": firm_id, "detail": str(exc)}
            )

    # --- Config --------------------------------------------------------------------------------

    def get_config(self, firm_id: str) -> ConfigResponse:
        config = self.configs.get_or_new(firm_id)
        # The newest run, finished or not, so the page shows a run in progress too.
        latest, _ = self.runs.list_runs(firm_id, limit=1)
        return config_response(
            config,
            default_partner_user_id=self.active_for(firm_id).default_partner(config.default_office_code),
            last_run=latest[0] if latest else None,
        )

    def _connected(self, firm_id: str) -> FirmConfig:
        """The firm's config when it is connected; else NotConnected (SPEC B5), ConnectionBroken
        when the connection broke (``needs_reconnect``)."""
        config = self.configs.get(firm_id)
        if config is not None and config.connection == "needs_reconnect":
            raise ConnectionBroken()
        if config is None or config.connection != "connected":
            raise NotConnected()
        return config

    def _connections(self, firm_id: str) -> list[Connection]:
        firm_tokens = self.tokens.for_firm(firm_id)
        identity = self.identity
        try:
            try:
                return identity.connections(firm_tokens.access_token())
            except AccessDenied:
                # A token Xero revoked early looks valid by its expiry: refresh once before giving up.
                return identity.connections(firm_tokens.access_token(force_refresh=True))
        except (NeedsReconnect, AccessDenied):
            self.configs.update(firm_id, status="needs_reconnect")
            raise ConnectionBroken() from None
        except XeroIdentityError as exc:
            logger.warning("xpm connections failed", extra={"firm_id": firm_id, "detail": str(exc)})
            raise XeroUnavailable() from None

    def list_tenants(self, firm_id: str) -> TenantsResponse:
        self._connected(firm_id)
        tenants = [
            Tenant(tenant_id=c.tenant_id, tenant_name=c.tenant_name) for c in self._connections(firm_id)
        ]
        return TenantsResponse(tenants=tenants)

    def save_config(self, firm_id: str, body: ConfigBody) -> ConfigResponse:
        """SPEC B5 PUT: every value must exist; saves without syncing ("Later").

        The config is written only while the firm is still connected: a PUT that loses a race with
        Disconnect answers 409 and writes nothing, so Disconnect's outcome stands (SPEC A6).
        """
        current = self._connected(firm_id)
        active = self.active_for(firm_id)
        # Active's own records first: they cost no call to Xero.
        if active.office(body.default_office_code) is None:
            raise InvalidValue("default_office_code", _NO_OFFICE)
        for field, user_id in (
            ("default_partner_user_id", body.default_partner_user_id),
            ("notification_user_id", body.notification_user_id),
        ):
            if user_id is not None and not active.user_exists(user_id):
                raise InvalidValue(field, f"{field} is not a user of this firm in Active.")
        tenant = next((c for c in self._connections(firm_id) if c.tenant_id == body.tenant_id), None)
        if tenant is None:
            raise InvalidValue(
                "tenant_id", "tenant_id is not one of the firm's Practice Manager connections."
            )

        self.configs.update_if_connected(
            firm_id,
            defaults=NEW_CONFIG_DEFAULTS,
            sync_name=body.sync_name,
            tenant_id=tenant.tenant_id,
            tenant_name=tenant.tenant_name,
            default_office_code=body.default_office_code,
            notification_user_id=body.notification_user_id,
            **tenant_change(current, tenant.tenant_id),
        )
        # SPEC B5: null clears the office's Default Partner; a body without the key leaves it alone.
        if "default_partner_user_id" in body.model_fields_set:
            try:
                active.set_default_partner(body.default_office_code, body.default_partner_user_id)
            except OfficeGone:
                raise InvalidValue("default_office_code", _NO_OFFICE) from None
        logger.info("xpm config saved", extra={"firm_id": firm_id})
        return self.get_config(firm_id)

    # --- Start Sync and disconnect --------------------------------------------------------------

    def start_sync(self, firm_id: str) -> StartSyncResponse:
        config = self._connected(firm_id)
        # SPEC A6: an hourly schedule with no tenant, office or recipient could only fail and email.
        missing = config.missing_setup()
        if missing:
            raise NotConfigured(missing)
        if self.queue is None:
            raise RuntimeError("Start Sync needs the sync queue (SYNC_QUEUE_URL)")
        previous = self.configs.claim_manual_run(firm_id, self.clock)
        try:
            self.queue.enqueue(firm_id, "manual")
        except Exception:
            self.configs.release_manual_run(firm_id, previous)
            raise
        logger.info("xpm manual sync queued", extra={"firm_id": firm_id})
        return StartSyncResponse()

    def disconnect(self, firm_id: str) -> ConfigResponse:
        """Stop the schedule, revoke at Xero, delete the tokens; every synced record stays.

        The schedule stops first, whatever Xero answers. When Xero cannot be reached the tokens are
        kept, so that the admin's retry can still revoke them (a grant left alive at Xero is what
        disconnect promises to end). When Xero no longer accepts the app's own credentials no retry
        could revoke, so the disconnect goes on: our copy of the refresh token is the only one, and
        once deleted the grant serves nobody and expires at Xero after 60 days unused.

        Disconnect wins every race (SPEC A6): the last write sets the status, ``sync_enabled`` and
        ``run_pending`` together, so a Start Sync that claimed a run while Xero was slow to revoke
        is undone, and from then on Start Sync's and PUT's writes, conditional on a connected firm,
        are refused.
        """
        config = self.configs.get(firm_id)
        if config is not None and (config.sync_enabled or config.run_pending):
            self.configs.update(firm_id, sync_enabled=False, run_pending=False)
        stored = self.tokens.load(firm_id)
        if stored is not None:
            try:
                self.identity.revoke(stored.refresh_token)
            except InvalidGrant:
                pass  # already revoked at Xero (or expired): exactly the state disconnect wants
            except InvalidClient as exc:
                logger.error(
                    "xpm revoke refused the app's credentials; tokens deleted without revoking",
                    extra={"firm_id": firm_id, "detail": str(exc)},
                )
            except XeroIdentityError as exc:
                logger.warning("xpm revoke failed", extra={"firm_id": firm_id, "detail": str(exc)})
                raise XeroUnavailable() from None
        self.tokens.delete(firm_id)
        if config is not None:
            ended = "not_connected" if config.connection == "not_connected" else "disconnected"
            self.configs.update(firm_id, status=ended, sync_enabled=False, run_pending=False)
        logger.info("xpm disconnected", extra={"firm_id": firm_id})
        return self.get_config(firm_id)

    # --- Runs (Sync Monitoring) -----------------------------------------------------------------

    def list_runs(self, firm_id: str, *, limit: int, cursor: str | None) -> RunsPage:
        if cursor is not None and len(cursor) > _MAX_CURSOR_LENGTH:
            raise InvalidCursor()
        page, next_cursor = self.runs.list_runs(firm_id, limit=limit, cursor=cursor or None)
        return RunsPage(runs=[run_out(run) for run in page], next_cursor=next_cursor)

    def get_run(self, firm_id: str, run_id: str) -> RunDetail:
        # Another firm's run is looked up under this firm's key, so it is simply not found (B4).
        run = self.runs.get_run(firm_id, run_id) if _RUN_ID.match(run_id) else None
        if run is None:
            raise NotFound("No such run.")
        return run_detail(run, self.runs.entries(firm_id, run_id))
