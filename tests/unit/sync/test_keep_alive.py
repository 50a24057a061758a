"""The keep-alive of an idle connection (SPEC A6) when Xero refuses it, through the engine's fakes."""

from __future__ import annotations

from datetime import timedelta

from xpm_sync.adapters.tokens import NeedsReconnect
from xpm_sync.domain.clock import iso
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.sync.engine import record_connection_lost
from xpm_sync.sync.keep_alive import KeepAlive

from tests.fakes import FIRM, Firm


class _RefusedTokens:
    """Xero refuses the idle grant; ``then`` runs first (what lands while the refresh is refused)."""

    def __init__(self, then: object = None) -> None:
        self._then = then

    def for_firm(self, firm_id: str) -> _RefusedTokens:
        return self

    def load(self, firm_id: str) -> None:
        return None

    def access_token(self, *, force_refresh: bool = False, refused: str | None = None) -> str:
        if callable(self._then):
            self._then()
        raise NeedsReconnect("invalid_grant")


def _keep_alive(firm: Firm, tokens: _RefusedTokens) -> KeepAlive:
    def report(config: FirmConfig) -> object:
        return record_connection_lost(
            config.firm_id, "schedule", firm.services(), "refused", grant_id=config.grant_id
        )

    return KeepAlive(configs=firm.configs, tokens=tokens, clock=firm.clock, report_refused=report)  # type: ignore[arg-type]


def _idle(firm: Firm) -> None:
    long_ago = iso(firm.clock.now() - timedelta(days=40))
    firm.configs.update(
        FIRM, grant_id="grant-1", sync_enabled=False, connected_at=long_ago, tokens_refreshed_at=long_ago
    )


def test_an_idle_grant_xero_refuses_asks_the_admin_to_reconnect() -> None:
    firm = Firm()
    _idle(firm)

    assert _keep_alive(firm, _RefusedTokens())(FIRM) == "needs_reconnect"

    assert firm.config.status == "needs_reconnect"
    assert len(firm.notifier.sent) == 1


def test_an_idle_grant_refused_after_the_admin_reconnected_leaves_the_new_connection_alone() -> None:
    """A review of 2026-12-07 (evening): the refusal was recorded against the config as read after
    it, which named the admin's new grant by then: the new connection was marked broken."""
    firm = Firm()
    _idle(firm)

    def reconnect() -> None:
        firm.configs.update(FIRM, grant_id="grant-2", connected_at=iso(firm.clock.now()))

    _keep_alive(firm, _RefusedTokens(then=reconnect))(FIRM)

    assert firm.config.status == "connected"
    assert firm.config.grant_id == "grant-2"
    assert firm.notifier.sent == []
    assert firm.runs.runs == {}
