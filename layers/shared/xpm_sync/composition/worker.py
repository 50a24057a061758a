"""The worker's part of the composition root (``xpm_sync.composition``): a run's services and an
idle connection's keep-alive."""

from __future__ import annotations

from collections.abc import Callable

from xpm_sync import composition
from xpm_sync.adapters import aws
from xpm_sync.adapters.active_table import ActiveRepository
from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.notifier import Notifier
from xpm_sync.adapters.sync_log import Matches, RecordStates, RunLog
from xpm_sync.adapters.xpm.budget import CallBudget
from xpm_sync.adapters.xpm.client import AccessTokenSource, XpmApi
from xpm_sync.composition import sync_queue, token_store
from xpm_sync.domain.clock import Clock, SystemClock
from xpm_sync.settings import WorkerSettings
from xpm_sync.sync.engine import SyncServices, record_connection_lost
from xpm_sync.sync.keep_alive import KeepAlive


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
            # The email counts what was fixed within the last 90 days, as Sync Monitoring does.
            states_for=lambda firm_id: RecordStates(sync_log, firm_id, clock=clock),
            notify_table=aws.table(settings.notify_table),
            ses_client=aws.client("ses"),
            from_email=settings.notify_from_email,
            frontend_url=settings.frontend_url,
            clock=clock,
        ),
    )


def keep_alive(settings: WorkerSettings, services: SyncServices) -> KeepAlive:
    """The worker's keep-alive of an idle connection (SPEC A6), judged on the root's ``clock``;
    a refusal is recorded as a run of ``services`` would record it."""
    return KeepAlive(
        configs=ConfigRepository(aws.table(settings.config_table)),
        tokens=token_store(settings, composition.clock),
        clock=composition.clock,
        report_refused=lambda config: record_connection_lost(
            config.firm_id,
            "schedule",
            services,
            "Xero refused to renew this firm's idle connection (unused too long, or revoked).",
            grant_id=config.grant_id,
        ),
    )
