"""What each route does (SPEC A6, B5): one object, built by the composition root, one method a route.

Handlers parse and shape; this decides. Every failure a caller can cause is an
``xpm_sync.domain.errors`` exception, which ``xpm_sync.api.http`` turns into the B5 error body.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from pydantic import BaseModel

from xpm_sync.adapters.active_table import ActiveRepository, OfficeGone
from xpm_sync.adapters.config_table import NEW_CONFIG_DEFAULTS, ConfigRepository, config_defaults
from xpm_sync.adapters.oauth_states import InvalidState, OAuthState, StateStore
from xpm_sync.adapters.sync_log import ENTRIES_PAGE, Matches, RecordStates, RunLog
from xpm_sync.adapters.sync_queue import SyncQueue
from xpm_sync.adapters.tokens import GrantNotSaved, NeedsReconnect, StoredTokens, TokenStore
from xpm_sync.adapters.xero_identity import (
    AccessDenied,
    Connection,
    InvalidClient,
    InvalidGrant,
    RevocationRefused,
    XeroIdentity,
    XeroIdentityError,
    new_code_verifier,
    s256_challenge,
    user_from_id_token,
)
from xpm_sync.api.caller import Caller
from xpm_sync.api.models import (
    ANSWER_BUDGET_BYTES,
    CallbackRequest,
    ConfigBody,
    ConfigResponse,
    ConnectRequest,
    ConnectResponse,
    EntriesPage,
    MatchAnswerRequest,
    MatchesPage,
    MatchOut,
    PreviewResponse,
    ProblemsPage,
    ProblemSummaryResponse,
    RunDetail,
    RunsPage,
    StartSyncResponse,
    Tenant,
    TenantsResponse,
    answer_bytes,
    config_response,
    entries_page,
    items_bytes,
    match_out,
    matches_page,
    problems_out,
    run_detail,
    run_out,
    summary_response,
)
from xpm_sync.domain.clock import Clock, iso
from xpm_sync.domain.entries import EntryEntity, Severity
from xpm_sync.domain.errors import (
    ConnectionBroken,
    InvalidValue,
    NoPracticeManager,
    NotConnected,
    NotFound,
    NotSignedIn,
    OAuthStateInvalid,
    XeroConsentDenied,
    XeroUnavailable,
)
from xpm_sync.domain.firm import FirmConfig, tenant_change
from xpm_sync.domain.near_match import MatchAnswer
from xpm_sync.domain.problem_summary import summarise_problems
from xpm_sync.domain.runs import SyncRun, new_counts, new_run_id
from xpm_sync.observability import logger

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A suggestion is kept under its XPM UUID as a sort key, which DynamoDB caps at 1,024 bytes: a
# longer one names no suggestion (and asking DynamoDB would be its error, not the caller's 404).
_MAX_SORT_KEY_BYTES = 1024
# Open problems are paged by record: a record has a few problems at most (one per code).
PROBLEM_RECORDS_PAGE = 100
MATCHES_PAGE = 100
_NO_SUCH_RUN = "No such run."
_NO_SUCH_MATCH = "No suggested link for this XPM client."
_NOT_UNLINKED = "client_id is not a client of this firm in Active that is not linked to XPM."

Answer = TypeVar("Answer", bound=BaseModel)
# What each item of a page (an entry, a record, a suggestion) puts in the answer, in order.
PageItems = Sequence[Sequence[BaseModel]]
_NO_OFFICE = "default_office_code is not an office of this firm in Active."
_CODE_REFUSED = (
    "Xero did not accept this sign-in (it may have expired); connect to Xero Practice Manager again."
)


def _bound_user(caller: Caller) -> str:
    """Who the OAuth state is bound to (SPEC B4). Cognito's id token always names its user; one
    that does not cannot start or finish a connect, since nothing could tell its callback apart."""
    if caller.user_sub is None:
        raise NotSignedIn("Your sign-in does not say which user you are; sign in to Active again.")
    return caller.user_sub


def _within_budget(page_of: Callable[[int], tuple[Answer, PageItems]], limit: int) -> Answer:
    """The answer for a page of ``limit`` items, or of as many fewer as keep it under
    ``ANSWER_BUDGET_BYTES`` (SPEC B5: every answer under 1 MB, whatever the firm's size).

    ``page_of(n)`` answers a page of at most ``n`` items (runs' entries, records, suggestions) and
    gives what each of them puts in the answer. A page of ordinary items fits at the first try;
    only items near their longest (``api.models`` caps each) make it read again, as many as fit
    of the same leading items: once, unless the list changed in between. The next cursor is
    always the one of the page answered, so paging goes on from its last item.
    """
    while True:
        answer, items = page_of(limit)
        size = answer_bytes(answer)
        if len(items) <= 1 or size <= ANSWER_BUDGET_BYTES:
            return answer
        costs = [items_bytes(parts) for parts in items]
        room = ANSWER_BUDGET_BYTES - (size - sum(costs))  # what the page costs without its items
        fitting = 0
        for cost in costs:
            room -= cost
            if room < 0:
                break
            fitting += 1
        limit = max(1, min(fitting, len(items) - 1))


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
    # A firm's open problems and its suggested links, in the sync log (paged with signed cursors).
    record_states_for: Callable[[str], RecordStates]
    matches_for: Callable[[str], Matches]
    identity_factory: Callable[[], XeroIdentity]
    tokens_factory: Callable[[XeroIdentity], TokenStore]
    clock: Clock
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

    # --- Connect (SPEC A6, B4) -----------------------------------------------------------------

    def start_connect(self, caller: Caller, request: ConnectRequest | None) -> ConnectResponse:
        user_sub = _bound_user(caller)
        if self.redirect_uri is None:
            raise RuntimeError("connecting needs OAUTH_REDIRECT_URI")
        # Read the app's credentials before writing anything: a secret that cannot be read is a 500
        # that leaves no state behind.
        identity = self.identity
        # The firm's config item exists from the first connect with its B3 attributes. A name given
        # now waits with the state: only a consent that connects the firm applies it, so a refused
        # one leaves the firm as it was (SPEC A6); an absent one leaves the stored name alone.
        self.configs.update(caller.firm_id, defaults=config_defaults(self.configs.get(caller.firm_id)))
        code_verifier = new_code_verifier()
        state = self.states.issue(
            caller.firm_id, user_sub, code_verifier, sync_name=request.sync_name if request else None
        )
        logger.info("xpm connect started", extra={"firm_id": caller.firm_id})
        return ConnectResponse(
            authorize_url=identity.authorize_url(
                redirect_uri=self.redirect_uri, state=state, code_challenge=s256_challenge(code_verifier)
            )
        )

    def complete_callback(self, caller: Caller, request: CallbackRequest) -> ConfigResponse:
        """The setup page posts what Xero sent back; the answer is the config, as GET gives it.

        Only the admin who started the connect, in their own firm, can complete it (SPEC B4).
        Nothing is stored unless every step succeeded; a grant Xero issued that is not kept is
        revoked there. The code, the state and the tokens are never logged.
        """
        user_sub = _bound_user(caller)
        if not request.state:
            raise self._state_refused(caller)
        if request.error is None and request.code is None:
            raise InvalidValue("code", "code is required (or error, when Xero sent one).")
        if self.redirect_uri is None:
            raise RuntimeError("the callback needs OAUTH_REDIRECT_URI")
        if request.error is not None:
            # Burn the state, so the same link cannot be replayed with a code later.
            self._consume_state(caller, user_sub, request.state)
            logger.warning(
                "xpm consent not given at Xero",
                extra={"firm_id": caller.firm_id, "access_denied": request.error == "access_denied"},
            )
            raise XeroConsentDenied()
        assert request.code is not None
        # The app's credentials first: a secret that cannot be read (a 500) leaves the state usable.
        identity = self.identity
        grant = self._consume_state(caller, user_sub, request.state)
        try:
            token_set = identity.exchange_code(
                code=request.code, redirect_uri=self.redirect_uri, code_verifier=grant.code_verifier
            )
        except InvalidGrant:
            logger.warning("xpm code exchange refused", extra={"firm_id": grant.firm_id})
            raise XeroUnavailable(_CODE_REFUSED) from None
        except XeroIdentityError as exc:
            logger.warning("xpm code exchange failed", extra={"firm_id": grant.firm_id, "detail": str(exc)})
            raise XeroUnavailable() from None
        try:
            connections = identity.connections(token_set.access_token)
        except XeroIdentityError as exc:
            logger.warning("xpm connections failed", extra={"firm_id": grant.firm_id, "detail": str(exc)})
            self._revoke_quietly(token_set.refresh_token, grant.firm_id, "an unused grant")
            raise XeroUnavailable() from None
        if not connections:
            # SPEC A6: refused; nothing written, so the firm's previous connection (if any) stands.
            logger.warning("xpm consent granted no practice manager tenant", extra={"firm_id": grant.firm_id})
            self._revoke_quietly(token_set.refresh_token, grant.firm_id, "a grant without Practice Manager")
            raise NoPracticeManager()

        user = user_from_id_token(token_set.id_token)
        tenant = _preselected_tenant(connections)

        def describe_the_grant() -> None:
            # Under the grant's lease, with the tokens just stored: two connects finishing together,
            # or a Disconnect, never leave the config describing one grant and the secret another.
            current = self.configs.get_or_new(grant.firm_id)
            # Without a tenant the hourly sync could only fail, and with another practice than the
            # one the admin chose it would fill Active with clients nobody asked for: either way
            # it waits for the admin's Start Sync (SPEC A6).
            switched = (
                tenant is not None
                and current.tenant_id is not None
                and tenant.tenant_id.casefold() != current.tenant_id.casefold()
            )
            paused = {"sync_enabled": False} if tenant is None or switched else {}
            named = {"sync_name": grant.sync_name} if grant.sync_name else {}
            self.configs.update(
                grant.firm_id,
                defaults=NEW_CONFIG_DEFAULTS,
                **named,
                status="connected",
                # A new grant owes nothing for the one it replaces (the email of a lost connection).
                reconnect_notice_run_id=None,
                connected_by_name=user.name,
                connected_by_email=user.email,
                connected_at=iso(self.clock.now()),
                grant_id=secrets.token_hex(8),
                tenant_id=tenant.tenant_id if tenant else None,
                tenant_name=tenant.tenant_name if tenant else None,
                **paused,
                **tenant_change(current, tenant.tenant_id if tenant else None),
            )

        try:
            replaced = self.tokens.save(grant.firm_id, token_set, then=describe_the_grant)
        except GrantNotSaved as exc:
            # A write whose answer was lost may have landed: the secret says whether it did.
            stored = (
                exc.stored if exc.stored is not None else self._holds(grant.firm_id, token_set.refresh_token)
            )
            if stored is None:
                # Nobody can tell which grant is the firm's: neither is ended, for the admin's retry
                # (a reconnect) to replace whichever is stored.
                logger.error("a new grant may or may not be stored", extra={"firm_id": grant.firm_id})
            elif stored:
                # The firm's now, whatever the config could not record; the admin tries again.
                self._end_replaced(grant.firm_id, exc.replaced, token_set.refresh_token)
            else:
                self._revoke_quietly(
                    token_set.refresh_token, grant.firm_id, "a grant that could not be stored"
                )
            raise
        except Exception:
            # The grant never reached the secret (its old copy unreadable, say): it serves nobody.
            self._revoke_quietly(token_set.refresh_token, grant.firm_id, "a grant that could not be stored")
            raise
        self._end_replaced(grant.firm_id, replaced, token_set.refresh_token)
        logger.info(
            "xpm connected",
            extra={"firm_id": grant.firm_id, "tenants": len(connections), "preselected": tenant is not None},
        )
        return self.get_config(grant.firm_id)

    def _consume_state(self, caller: Caller, user_sub: str, state: str) -> OAuthState:
        try:
            return self.states.consume(state, firm_id=caller.firm_id, user_sub=user_sub)
        except InvalidState:
            raise self._state_refused(caller) from None

    @staticmethod
    def _state_refused(caller: Caller) -> OAuthStateInvalid:
        logger.warning("xpm callback state refused", extra={"firm_id": caller.firm_id})
        return OAuthStateInvalid()

    def _revoke_quietly(self, refresh_token: str, firm_id: str, what: str) -> None:
        """End a grant at Xero that nobody will use (best effort: the answer never depends on it)."""
        try:
            self.identity.revoke(refresh_token)
        except XeroIdentityError as exc:
            logger.warning("xpm revoke failed", extra={"firm_id": firm_id, "grant": what, "detail": str(exc)})

    # --- Config --------------------------------------------------------------------------------

    def get_config(self, firm_id: str) -> ConfigResponse:
        config = self.configs.get_or_new(firm_id)
        return config_response(
            config,
            default_partner_user_id=self.active_for(firm_id).default_partner(config.default_office_code),
            # Finished or not, so the page shows a run in progress too; never a preview.
            last_run=self.runs.latest_sync(firm_id),
        )

    def require_connection(self, firm_id: str) -> None:
        """NotConnected (or ConnectionBroken) unless the firm is connected (SPEC B5's 409)."""
        self._connected(firm_id)

    def _connected(self, firm_id: str) -> FirmConfig:
        """The firm's config when it is connected; else NotConnected (SPEC B5), ConnectionBroken
        when the connection broke (``needs_reconnect``)."""
        config = self.configs.get(firm_id)
        if config is not None and config.connection == "needs_reconnect":
            raise ConnectionBroken()
        if config is None or config.connection != "connected":
            raise NotConnected()
        return config

    def _connections(self, config: FirmConfig) -> list[Connection]:
        firm_id = config.firm_id
        firm_tokens = self.tokens.for_firm(firm_id)
        identity = self.identity
        try:
            token = firm_tokens.access_token()
            try:
                return identity.connections(token)
            except AccessDenied:
                # A token Xero revoked early looks valid by its expiry: refresh once before giving up.
                return identity.connections(firm_tokens.access_token(refused=token))
        except (NeedsReconnect, AccessDenied):
            # Conditional, like the worker's: a Disconnect that answered while Xero was refusing
            # these tokens (it revoked them) keeps its outcome (SPEC A6).
            if not self.configs.mark_needs_reconnect(firm_id, grant_id=config.grant_id):
                raise NotConnected() from None
            self._record_lost_connection(firm_id, config.grant_id)
            raise ConnectionBroken() from None
        except XeroIdentityError as exc:
            logger.warning("xpm connections failed", extra={"firm_id": firm_id, "detail": str(exc)})
            raise XeroUnavailable() from None

    def _record_lost_connection(self, firm_id: str, grant_id: str | None) -> None:
        """The firm's runs stop with its connection: the worker records the loss as a run finding
        it would (a run-level entry, an open problem) and tells the notification user (SPEC A8),
        who may not be the admin at the setup page. A queue that fails costs the admin nothing."""
        if self.queue is None:
            return
        try:
            self.queue.enqueue_lost_connection(firm_id, grant_id)
        except Exception:
            logger.exception("the lost connection was not queued for its record", extra={"firm_id": firm_id})

    def list_tenants(self, firm_id: str) -> TenantsResponse:
        config = self._connected(firm_id)
        tenants = [
            Tenant(tenant_id=c.tenant_id, tenant_name=c.tenant_name) for c in self._connections(config)
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
        # Tenant ids are GUIDs: one typed in another case names the same connection, and the
        # config keeps Xero's spelling (the xero-tenant-id header and tenant changes compare it).
        wanted = body.tenant_id.casefold()
        tenant = next((c for c in self._connections(current) if c.tenant_id.casefold() == wanted), None)
        if tenant is None:
            raise InvalidValue(
                "tenant_id", "tenant_id is not one of the firm's Practice Manager connections."
            )

        self.configs.update_if_connected(
            firm_id,
            defaults=config_defaults(current),
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

    def _queue(self, action: str) -> SyncQueue:
        """The queue Start Sync and Preview put runs on. Their claims (one conditional write each)
        refuse a firm that is not connected or not configured (SPEC A6: a run with no tenant,
        office or recipient could only fail and email), so nothing is read before them."""
        if self.queue is None:
            raise RuntimeError(f"{action} needs the sync queue (SYNC_QUEUE_URL)")
        return self.queue

    def start_sync(self, firm_id: str) -> StartSyncResponse:
        queue = self._queue("Start Sync")
        previous = self.configs.claim_manual_run(firm_id, self.clock)
        try:
            queue.enqueue_manual(firm_id)
        except Exception:
            self.configs.release_manual_run(firm_id, previous)
            raise
        logger.info("xpm manual sync queued", extra={"firm_id": firm_id})
        return StartSyncResponse()

    def disconnect(self, firm_id: str) -> ConfigResponse:
        """Stop the schedule, revoke at Xero, delete the tokens; every synced record stays.

        When Xero cannot be reached the tokens are kept, so that the admin's retry can still
        revoke them (a grant left alive at Xero is what disconnect promises to end). When Xero no
        longer accepts the app's own credentials, or refuses the revocation request itself, no
        retry could revoke, so the disconnect goes on: our copy of the refresh token is the only
        one, and once deleted the grant serves nobody and expires at Xero after 60 days unused.

        Disconnect wins every race (SPEC A6). The firm reads disconnected before Xero is asked, so
        a run meeting the revoked grant meanwhile finds it so (and emails nobody); if Xero cannot
        be reached, it reads as before (its schedule too), so the admin tries again. The end (the
        secret deleted, the status written) holds the grant's lease: a connect that stored a new
        grant while Xero was revoking the old one is revoked too, never half described. The last
        write sets the status, ``sync_enabled`` and ``run_pending`` together, so a Start Sync that
        claimed a run meanwhile is undone, and from then on Start Sync's and PUT's writes,
        conditional on a connected firm, are refused.
        """
        config = self.configs.get(firm_id)
        ended = "not_connected" if config is None or config.connection == "not_connected" else "disconnected"
        attempt = secrets.token_hex(8)
        if config is not None:
            self.configs.update(
                firm_id, status=ended, sync_enabled=False, run_pending=False, disconnect_attempt=attempt
            )
        stored = self.tokens.load(firm_id)
        try:
            if stored is not None:
                self._revoke_for_disconnect(firm_id, stored.refresh_token)
        except XeroUnavailable:
            self._undo_disconnect(config, attempt)
            raise
        with self.tokens.exclusive(firm_id):
            now_stored = self.tokens.load(firm_id)
            if now_stored is not None and (
                stored is None or now_stored.refresh_token != stored.refresh_token
            ):
                # A connect landed while Xero revoked: Disconnect wins, so its grant ends too; if
                # Xero cannot be asked, it stays stored (and the firm as that connect left it) for
                # the admin's retry, never alive at Xero with nobody holding it.
                self._revoke_for_disconnect(firm_id, now_stored.refresh_token)
            self.tokens.delete(firm_id)
            if config is not None:
                self.configs.update(
                    firm_id, status=ended, sync_enabled=False, run_pending=False, disconnect_attempt=None
                )
        logger.info("xpm disconnected", extra={"firm_id": firm_id})
        return self.get_config(firm_id)

    def _end_replaced(self, firm_id: str, replaced: StoredTokens | None, new_refresh_token: str) -> None:
        """SPEC A6: no grant of the firm's stays alive unseen. Called once the new tokens are
        stored, so a failure here costs at most a grant Xero drops after 60 days unused."""
        if replaced is not None and replaced.refresh_token != new_refresh_token:
            self._revoke_quietly(replaced.refresh_token, firm_id, "the replaced grant")

    def _holds(self, firm_id: str, refresh_token: str) -> bool | None:
        """Whether the firm's secret holds this grant; None when the secret cannot be read."""
        try:
            held = self.tokens.load(firm_id)
        except Exception:
            return None
        return held is not None and held.refresh_token == refresh_token

    def _undo_disconnect(self, config: FirmConfig | None, attempt: str) -> None:
        """Xero could not be reached: the firm reads as before, for the admin to try again (unless
        a connect, a refused grant or another Disconnect has changed it meanwhile)."""
        if config is None:
            return
        # As this attempt read it, another Disconnect's attempt included (so that one can still
        # undo its own); not run_pending, whose run may have been dropped meanwhile.
        if not self.configs.undo_disconnect(
            config.firm_id,
            attempt=attempt,
            status=config.connection,
            sync_enabled=config.sync_enabled,
            disconnect_attempt=config.disconnect_attempt,
        ):
            logger.info("the firm changed during a failed disconnect", extra={"firm_id": config.firm_id})

    def _revoke_for_disconnect(self, firm_id: str, refresh_token: str) -> None:
        try:
            self.identity.revoke(refresh_token)
        except InvalidGrant:
            pass  # already revoked at Xero (or expired): exactly the state disconnect wants
        except (InvalidClient, RevocationRefused) as exc:
            # No retry could revoke: the admin's Disconnect must not be stuck behind it.
            logger.error(
                "xpm revoke refused for good; tokens deleted without revoking",
                extra={"firm_id": firm_id, "detail": str(exc)},
            )
        except XeroIdentityError as exc:
            logger.warning("xpm revoke failed", extra={"firm_id": firm_id, "detail": str(exc)})
            raise XeroUnavailable() from None

    # --- Runs (Sync Monitoring) -----------------------------------------------------------------

    def list_runs(self, firm_id: str, *, limit: int, cursor: str | None) -> RunsPage:
        # The signer refuses a cursor of the wrong length or shape (400) before it is read.
        page, next_cursor = self.runs.list_runs(firm_id, limit=limit, cursor=cursor or None)
        return RunsPage(runs=[run_out(run) for run in page], next_cursor=next_cursor)

    def _run(self, firm_id: str, run_id: str) -> SyncRun:
        # Another firm's run is looked up under this firm's key, so it is simply not found (B4).
        run = self.runs.get_run(firm_id, run_id) if _RUN_ID.match(run_id) else None
        if run is None:
            raise NotFound(_NO_SUCH_RUN)
        return run

    def get_run(self, firm_id: str, run_id: str) -> RunDetail:
        """The run and the first page of its error log (SPEC B5): a run of a large firm can hold
        tens of thousands of entries, and the rest are paged by ``run_entries``."""
        run = self._run(firm_id, run_id)

        def detail(limit: int) -> tuple[RunDetail, PageItems]:
            entries, next_cursor = self.runs.entries_page(firm_id, run_id, limit=limit)
            answer = run_detail(run, entries, next_cursor)
            return answer, [[entry] for entry in answer.entries]

        return _within_budget(detail, ENTRIES_PAGE)

    def run_entries(
        self,
        firm_id: str,
        run_id: str,
        *,
        cursor: str | None,
        severity: Severity | None,
        code: str | None,
    ) -> EntriesPage:
        """A page of a run's error log, errors first, from the start or ``cursor``; a cursor
        handed out for another run, firm, list or filter is refused (InvalidCursor)."""
        run = self._run(firm_id, run_id)

        def page(limit: int) -> tuple[EntriesPage, PageItems]:
            entries, next_cursor = self.runs.entries_page(
                firm_id, run_id, cursor=cursor, severity=severity, code=code, limit=limit
            )
            answer = entries_page(run, entries, next_cursor)
            return answer, [[entry] for entry in answer.entries]

        return _within_budget(page, ENTRIES_PAGE)

    # --- Open problems (SPEC B6) ----------------------------------------------------------------

    def problems(
        self, firm_id: str, *, cursor: str | None, code: str | None, entity: EntryEntity | None
    ) -> ProblemsPage:
        """The firm's open problems now, one item per (record, code), a page of records at a time."""
        states = self.record_states_for(firm_id)

        def page(limit: int) -> tuple[ProblemsPage, PageItems]:
            found, _, next_cursor = states.open_page(cursor=cursor, code=code, entity=entity, limit=limit)
            # A record's problems come and go together: the page is cut between records.
            per_record = [problems_out(state, code=code) for state in found]
            return ProblemsPage(
                problems=[problem for problems in per_record for problem in problems], next_cursor=next_cursor
            ), per_record

        return _within_budget(page, PROBLEM_RECORDS_PAGE)

    def problem_summary(self, firm_id: str) -> ProblemSummaryResponse:
        """The open problems by code, and what was fixed since the last email: the summary the
        email leads with (``adapters.notifier``), counted the same way."""
        config = self.configs.get_or_new(firm_id)
        states = self.record_states_for(firm_id)
        summary = summarise_problems(
            states.every_open(),
            states.fixed_after(config.last_notified_at),
            last_emailed_at=config.last_notified_at,
        )
        return summary_response(summary)

    # --- Preview (SPEC B6: a dry run) ------------------------------------------------------------

    def preview(self, firm_id: str) -> PreviewResponse:
        """Queue a dry run: it reads XPM as a first sync does and writes nothing to Active.

        The gate is Start Sync's (409 unless connected and configured; 429 while a preview is
        queued or running, or within 5 minutes of the last), one conditional write on the config.
        The run is saved before it is queued, as the worker reads it; a queue that refuses the
        message gives the claim back and ends the run, so none is left looking queued.
        """
        queue = self._queue("Preview")
        previous = self.configs.claim_preview(firm_id, self.clock)
        now = self.clock.now()
        run = SyncRun(
            firm_id=firm_id,
            run_id=new_run_id(now),
            trigger="manual",
            status="running",
            started_at=iso(now),
            counts=new_counts(dry_run=True),
            dry_run=True,
        )
        try:
            self.runs.save_run(run, now)
            queue.enqueue_preview(firm_id, run.run_id)
        except Exception:
            self._undo_preview(run, previous)
            raise
        logger.info("xpm preview queued", extra={"firm_id": firm_id, "run_id": run.run_id})
        return PreviewResponse(run_id=run.run_id)

    def _undo_preview(self, run: SyncRun, previous_requested_at: str | None) -> None:
        """A preview that could not be queued: the admin may press again at once, and its run (if
        saved) ends failed rather than waiting for a worker that will never come. The claim first:
        it is what blocks the admin."""
        self.configs.release_preview(run.firm_id, previous_requested_at)
        ended = self.clock.now()
        try:
            self.runs.save_run(run.model_copy(update={"status": "failed", "finished_at": iso(ended)}), ended)
        except Exception as exc:  # the queue's failure is the one the caller hears of
            logger.warning(
                "xpm preview run left running after a queue failure",
                extra={"firm_id": run.firm_id, "run_id": run.run_id, "detail": str(exc)},
            )

    # --- Suggested links (SPEC B6) -------------------------------------------------------------

    def matches(self, firm_id: str, *, cursor: str | None) -> MatchesPage:
        matches = self.matches_for(firm_id)

        def page(limit: int) -> tuple[MatchesPage, PageItems]:
            found, next_cursor = matches.page(cursor, limit)
            answer = matches_page(found, next_cursor)
            return answer, [[match] for match in answer.matches]

        return _within_budget(page, MATCHES_PAGE)

    def answer_match(self, firm_id: str, xpm_uuid: str, request: MatchAnswerRequest) -> MatchOut:
        """The admin's answer to a suggested link, kept for the runs to come: ``link`` to an
        Active client of the firm that no XPM client is linked to, or ``create`` a new client.

        A suggestion never links by itself; the engine applies the answer at the next run, and
        links only if the client is still unlinked then.
        """
        if len(xpm_uuid.encode("utf-8")) > _MAX_SORT_KEY_BYTES:
            raise NotFound(_NO_SUCH_MATCH)
        matches = self.matches_for(firm_id)
        suggestion = matches.get(xpm_uuid)
        if suggestion is None:
            raise NotFound(_NO_SUCH_MATCH)
        answer: MatchAnswer = request.action
        # The client the run suggested, whatever an earlier answer linked instead.
        suggested = replace(
            suggestion,
            client_id=suggestion.suggested_client_id or suggestion.client_id,
            client_label=suggestion.suggested_client_label or suggestion.client_label,
            suggested_client_id=None,
            suggested_client_label=None,
        )
        chosen = suggested
        if answer == "link":
            if request.client_id is None:
                raise InvalidValue("client_id", "client_id is required to link.")
            client = self.active_for(firm_id).client(request.client_id)
            if client is None or client.xpm_uuid is not None:
                raise InvalidValue("client_id", _NOT_UNLINKED)
            if client.client_id != suggested.client_id:
                chosen = replace(
                    suggested,
                    client_id=client.client_id,
                    client_label=client.label,
                    suggested_client_id=suggested.client_id,
                    suggested_client_label=suggested.client_label,
                )
        answered = replace(chosen, answer=answer)
        if not matches.answer(answered):
            # A run applied the suggestion and forgot it between the read and the write.
            raise NotFound(_NO_SUCH_MATCH)
        logger.info("xpm suggested link answered", extra={"firm_id": firm_id, "answer": answer})
        return match_out(answered)
