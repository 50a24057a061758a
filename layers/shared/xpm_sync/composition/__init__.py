"""The one composition root: every handler builds its services here, from its function's settings.

- ``xpm_sync.composition`` (this module): what the functions share: the ``clock`` (module state,
  so tests can move time: OAuth state expiry, the Start Sync cooldown, the hourly schedule's
  ages), Xero's identity, the firm token store, the sync queue.
- ``xpm_sync.composition.worker``: the worker's services (the dispatcher's two, the config
  table and the queue, are here: it never loads the engine, the notifier or the XPM client).
- ``xpm_sync.composition.api``: the two API functions' ``IntegrationService``. Kept apart so the
  worker and the dispatcher never load the API's service and models (about 5-9% of the worker's
  cold-start import).

Settings are read at call time and AWS clients made on first use (``adapters.aws``), so tests and
the local stack can point the environment at moto and the simulator. The domain never reads the
environment or makes a client; adapters take theirs as parameters, from here. The app's Xero
credentials are read for each request that talks to Xero (one Secrets Manager read), so a rotated
app secret applies at once rather than at the next cold start.
"""

from __future__ import annotations

import httpx

from xpm_sync.adapters import aws
from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.sync_queue import SyncQueue
from xpm_sync.adapters.tls import shared_tls_context
from xpm_sync.adapters.tokens import RefreshLock, TokenStore
from xpm_sync.adapters.xero_identity import XeroIdentity, load_app_credentials
from xpm_sync.domain.clock import Clock, SystemClock
from xpm_sync.settings import DispatchSettings, FrontendSettings, XeroSettings, load_settings

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
        http=http or httpx.Client(timeout=IDENTITY_TIMEOUT, verify=shared_tls_context()),
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


def dispatch_configs() -> tuple[ConfigRepository, SyncQueue]:
    """The hourly dispatcher's config table and queue."""
    settings = load_settings(DispatchSettings)
    return ConfigRepository(aws.table(settings.config_table)), sync_queue(settings.sync_queue_url)


def dispatch_token_reader() -> TokenStore | None:
    """The dispatcher's read-only view of the firms' stored tokens (it never refreshes: no Xero
    identity); None when it is not told where they are."""
    settings = load_settings(DispatchSettings)
    if settings.token_secret_prefix is None:
        return None
    return TokenStore(
        secrets_client=aws.client("secretsmanager"),
        prefix=settings.token_secret_prefix,
        identity=None,
        clock=clock,
    )
