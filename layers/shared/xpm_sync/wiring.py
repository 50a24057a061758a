"""Composition root: builds the domain's services from a function's settings.

Handlers call these; the domain itself never reads the environment or makes a client.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from xpm_sync import aws
from xpm_sync.clock import Clock, SystemClock
from xpm_sync.config import ConfigRepository
from xpm_sync.notify import Notifier
from xpm_sync.queue import SyncQueue
from xpm_sync.runs import RunLog
from xpm_sync.settings import WorkerSettings, XeroSettings
from xpm_sync.sync.engine import SyncServices
from xpm_sync.tokens import RefreshLock, TokenStore
from xpm_sync.xero.identity import XeroIdentity, load_app_credentials
from xpm_sync.xpm.budget import CallBudget
from xpm_sync.xpm.client import AccessTokenSource, XpmClient

# Xero's identity endpoints answer in well under a second; anything slower is an outage.
IDENTITY_TIMEOUT = httpx.Timeout(15.0)


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
    """The firm token store; refreshes take their lease in the Config table (one writer per firm).
    Without ``identity``, one is built (and the app's secret read) at the first refresh."""
    return TokenStore(
        secrets_client=aws.client("secretsmanager"),
        prefix=settings.token_secret_prefix,
        identity=identity,
        identity_factory=lambda: xero_identity(settings, clock),
        clock=clock,
        lock=RefreshLock(aws.table(settings.config_table), clock),
    )


def sync_queue(queue_url: str) -> SyncQueue:
    return SyncQueue(aws.client("sqs"), queue_url)


def sync_services(
    settings: WorkerSettings,
    *,
    remaining_seconds: Callable[[], float],
    clock: Clock | None = None,
) -> SyncServices:
    clock = clock or SystemClock()

    def xpm_factory(tenant_id: str, tokens: AccessTokenSource) -> XpmClient:
        return XpmClient(
            api_url=settings.xero_api_url,
            tenant_id=tenant_id,
            tokens=tokens,
            remaining_seconds=remaining_seconds,
            # One budget per run: a Lambda container serves one invocation at a time, and XPM's own
            # 429s (waited out by the client) cover what one run cannot see.
            budget=CallBudget(),
        )

    return SyncServices(
        config=ConfigRepository(aws.table(settings.config_table)),
        runs=RunLog(aws.table(settings.sync_log_table)),
        active_table=aws.table(settings.active_table),
        tokens=token_store(settings, clock),
        xpm_factory=xpm_factory,
        clock=clock,
        queue=sync_queue(settings.sync_queue_url),
        remaining_seconds=remaining_seconds,
        after_run=Notifier(
            active_table=aws.table(settings.active_table),
            notify_table=aws.table(settings.notify_table),
            ses_client=aws.client("ses"),
            from_email=settings.notify_from_email,
            frontend_url=settings.frontend_url,
            clock=clock,
        ),
    )
