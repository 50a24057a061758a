"""The composition root: every handler builds its services here, from its function's settings.

Settings are read at call time and AWS clients made on first use (``adapters.aws``), so tests and
the local stack can point the environment at moto and the simulator. The domain never reads the
environment or makes a client; adapters take theirs as parameters, from here.

The two API functions' part (``IntegrationService``) is ``xpm_sync.api.composition``, on the
factories and the ``clock`` here: the worker and the dispatcher never load the API's modules (its
service and models were about 5-9% of the worker's cold-start import).

``clock`` is module state so tests can move time (OAuth state expiry, the Start Sync cooldown, the
hourly schedule's ages).
The app's Xero credentials are read for each request that talks to Xero (one Secrets Manager read),
so a rotated app secret applies at once rather than at the next cold start; the HTTP connection
pool to Xero is kept for the life of the container.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from xpm_sync.adapters import aws
from xpm_sync.adapters.active_table import ActiveRepository
from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.notifier import Notifier
from xpm_sync.adapters.sync_log import Matches, RecordStates, RunLog
from xpm_sync.adapters.sync_queue import SyncQueue
from xpm_sync.adapters.tokens import RefreshLock, TokenStore
from xpm_sync.adapters.xero_identity import XeroIdentity, load_app_credentials
from xpm_sync.adapters.xpm.budget import CallBudget
from xpm_sync.adapters.xpm.client import AccessTokenSource, XpmApi
from xpm_sync.domain.clock import Clock, SystemClock
from xpm_sync.settings import (
    DispatchSettings,
    FrontendSettings,
    WorkerSettings,
    XeroSettings,
    load_settings,
)
from xpm_sync.sync.engine import SyncServices, record_connection_lost
from xpm_sync.sync.keep_alive import KeepAlive

# Xero's identity endpoints answer in well under a second; anything slower is an outage.
IDENTITY_TIMEOUT = httpx.Timeout(15.0)

clock: Clock = SystemClock()


def frontend_url() -> str:
    return load_settings(FrontendSettings).frontend_url


def xero_identity(settings: XeroSettings, clock: Clock, *, http: httpx.Client | None = None) -> XeroIdentity:
    """The app's credentials are read now, from APP_SECRET_ID: a rotated secret applies at once."""
    return XeroIdentity(
        login_url=settings.xero_login_url,
        identity_url=settings.xero_identity_url,
        api_url=settings.xero_api_url,
        credentials=load_app_credentials(aws.client("secretsmanager"), settings.app_secret_id),
        http=http or httpx.Client(timeout=IDENTITY_TIMEOUT),
        clock=clock,
    )


def token_store(settings: XeroSettings, clock: Clock, identity: XeroIdentity | None = None) -> TokenStore:
    """The firm token store; refreshes take their lease in the Config table (one writer per firm),
    and every grant stored or refreshed is noted there (the keep-alive reads it, SPEC A6).
    Without ``identity``, one is built (and the app's secret read) at the first refresh."""
    return TokenStore(
        secrets_client=aws.client("secretsmanager"),
        prefix=settings.token_secret_prefix,
        identity=identity,
        identity_factory=lambda: xero_identity(settings, clock),
        clock=clock,
        lock=RefreshLock(aws.table(settings.config_table), clock),
        configs=ConfigRepository(aws.table(settings.config_table)),
    )


def sync_queue(queue_url: str) -> SyncQueue:
    return SyncQueue(aws.client("sqs"), queue_url)


# --- The worker and the dispatcher ------------------------------------------------------------


def sync_services(
    settings: WorkerSettings,
    *,
    remaining_seconds: Callable[[], float],
    clock: Clock | None = None,
) -> SyncServices:
    clock = clock or SystemClock()

    def xpm_factory(tenant_id: str, tokens: AccessTokenSource) -> XpmApi:
        return XpmApi(
            api_url=settings.xero_api_url,
            tenant_id=tenant_id,
            tokens=tokens,
            remaining_seconds=remaining_seconds,
            # One budget per run: a Lambda container serves one invocation at a time, and XPM's own
            # 429s (waited out by the client) cover what one run cannot see.
            budget=CallBudget(),
        )

    sync_log = aws.table(settings.sync_log_table)
    return SyncServices(
        config=ConfigRepository(aws.table(settings.config_table)),
        runs=RunLog(sync_log),
        active_for=lambda firm_id: ActiveRepository(aws.table(settings.active_table), firm_id),
        states_for=lambda firm_id: RecordStates(sync_log, firm_id),
        matches_for=lambda firm_id: Matches(sync_log, firm_id),
        tokens=token_store(settings, clock),
        xpm_factory=xpm_factory,
        clock=clock,
        queue=sync_queue(settings.sync_queue_url),
        remaining_seconds=remaining_seconds,
        notifier=Notifier(
            active_for=lambda firm_id: ActiveRepository(aws.table(settings.active_table), firm_id),
            states_for=lambda firm_id: RecordStates(sync_log, firm_id),
            notify_table=aws.table(settings.notify_table),
            ses_client=aws.client("ses"),
            from_email=settings.notify_from_email,
            frontend_url=settings.frontend_url,
            clock=clock,
        ),
    )


def keep_alive(settings: WorkerSettings, services: SyncServices) -> KeepAlive:
    """The worker's keep-alive of an idle connection (SPEC A6), judged on the module's ``clock``;
    a refusal is recorded as a run of ``services`` would record it."""
    return KeepAlive(
        configs=ConfigRepository(aws.table(settings.config_table)),
        tokens=token_store(settings, clock),
        clock=clock,
        report_refused=lambda firm_id: record_connection_lost(
            firm_id,
            "schedule",
            services,
            "Xero refused to renew this firm's idle connection (unused too long, or revoked).",
        ),
    )


def dispatch_configs() -> tuple[ConfigRepository, SyncQueue]:
    settings = load_settings(DispatchSettings)
    return ConfigRepository(aws.table(settings.config_table)), sync_queue(settings.sync_queue_url)
