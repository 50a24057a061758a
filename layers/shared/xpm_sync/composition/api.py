"""The two API functions' part of the composition root (``xpm_sync.composition``): the
``IntegrationService`` their routes call, on the root's shared factories and ``clock`` (read at
each call, so tests that move the clock move the API's)."""

from __future__ import annotations

from functools import lru_cache

import httpx

from xpm_sync import composition
from xpm_sync.adapters import aws
from xpm_sync.adapters.active_table import ActiveRepository
from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.cursors import CursorSigner
from xpm_sync.adapters.oauth_states import StateStore
from xpm_sync.adapters.sync_log import Matches, RecordStates, RunLog
from xpm_sync.adapters.tls import shared_tls_context
from xpm_sync.adapters.xero_identity import XeroIdentity
from xpm_sync.api.service import IntegrationService
from xpm_sync.domain.clock import SystemClock
from xpm_sync.settings import ApiSettings, FirmDataSettings, OAuthSettings, load_settings


@lru_cache(maxsize=1)
def _xero_http() -> httpx.Client:
    return httpx.Client(timeout=composition.IDENTITY_TIMEOUT, verify=shared_tls_context())


def _integration_service(
    settings: FirmDataSettings, *, redirect_uri: str | None = None, queue_url: str | None = None
) -> IntegrationService:
    clock = composition.clock

    def identity() -> XeroIdentity:
        return composition.xero_identity(settings, SystemClock(), http=_xero_http())

    sync_log = aws.table(settings.sync_log_table)
    cursors = CursorSigner(aws.table(settings.config_table))
    return IntegrationService(
        configs=ConfigRepository(aws.table(settings.config_table)),
        runs=RunLog(sync_log, cursors, clock),
        queue=composition.sync_queue(queue_url) if queue_url else None,
        states=StateStore(aws.table(settings.config_table), clock),
        active_for=lambda firm_id: ActiveRepository(aws.table(settings.active_table), firm_id),
        record_states_for=lambda firm_id: RecordStates(sync_log, firm_id, cursors, clock),
        matches_for=lambda firm_id: Matches(sync_log, firm_id, cursors),
        identity_factory=identity,
        tokens_factory=lambda made: composition.token_store(settings, composition.clock, identity=made),
        clock=clock,
        redirect_uri=redirect_uri,
    )


def api_service() -> IntegrationService:
    """What the API function's routes call (SPEC B5)."""
    settings = load_settings(ApiSettings)
    return _integration_service(settings, queue_url=settings.sync_queue_url)


def oauth_service() -> IntegrationService:
    """What the OAuth function's routes (connect, callback) call; Xero sends the browser back to
    ``OAUTH_REDIRECT_URI``, the Active setup page, which posts the callback (SPEC A6)."""
    settings = load_settings(OAuthSettings)
    return _integration_service(settings, redirect_uri=settings.oauth_redirect_uri)
