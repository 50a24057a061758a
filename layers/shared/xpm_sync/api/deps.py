"""Composition for the two API functions: settings read at call time, clients made on first use.

``clock`` is module state so tests can move time (state expiry, the Start Sync cooldown).
The app's Xero credentials are read for each request that talks to Xero (one Secrets Manager
read), so a rotated app secret applies at once rather than at the next cold start; the HTTP
connection pool to Xero is kept for the life of the container.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import httpx

from xpm_sync import aws, wiring
from xpm_sync.api.configs import ApiConfigs
from xpm_sync.api.directory import ActiveDirectory
from xpm_sync.api.manual import ManualRunGate
from xpm_sync.api.state import StateStore
from xpm_sync.clock import Clock, SystemClock
from xpm_sync.queue import SyncQueue
from xpm_sync.runs import RunLog
from xpm_sync.settings import ApiSettings, FrontendSettings, OAuthSettings, XeroSettings, load_settings
from xpm_sync.tokens import TokenStore
from xpm_sync.xero.identity import XeroIdentity

clock: Clock = SystemClock()


@lru_cache(maxsize=1)
def _xero_http() -> httpx.Client:
    return httpx.Client(timeout=wiring.IDENTITY_TIMEOUT)


def frontend_url() -> str:
    return load_settings(FrontendSettings).frontend_url


@dataclass
class _XeroDeps:
    settings: XeroSettings
    clock: Clock

    @cached_property
    def identity(self) -> XeroIdentity:
        return wiring.xero_identity(self.settings, SystemClock(), http=_xero_http())

    @cached_property
    def tokens(self) -> TokenStore:
        return wiring.token_store(self.settings, self.clock, identity=self.identity)

    def _table(self, name: str) -> Any:
        return aws.table(name)


@dataclass
class ApiDeps(_XeroDeps):
    settings: ApiSettings

    @cached_property
    def configs(self) -> ApiConfigs:
        return ApiConfigs(self._table(self.settings.config_table))

    @cached_property
    def runs(self) -> RunLog:
        return RunLog(self._table(self.settings.sync_log_table))

    @cached_property
    def queue(self) -> SyncQueue:
        return wiring.sync_queue(self.settings.sync_queue_url)

    @cached_property
    def gate(self) -> ManualRunGate:
        return ManualRunGate(self._table(self.settings.config_table), self.clock)

    def directory(self, firm_id: str) -> ActiveDirectory:
        return ActiveDirectory(self._table(self.settings.active_table), firm_id)


@dataclass
class OAuthDeps(_XeroDeps):
    settings: OAuthSettings

    @cached_property
    def configs(self) -> ApiConfigs:
        return ApiConfigs(self._table(self.settings.config_table))

    @cached_property
    def states(self) -> StateStore:
        return StateStore(self._table(self.settings.config_table), self.clock)


def api_deps() -> ApiDeps:
    return ApiDeps(settings=load_settings(ApiSettings), clock=clock)


def oauth_deps() -> OAuthDeps:
    return OAuthDeps(settings=load_settings(OAuthSettings), clock=clock)
