"""The keep-alive of an idle connection (SPEC A6): refresh a firm's tokens and run nothing.

A firm that pressed Later, or whose sync is paused, makes no XPM call for weeks; Xero drops a
refresh token unused for 60 days, and the connection would die before the admin ever starts. The
hourly dispatcher queues a keep-alive for such a firm after 30 days (``domain.hourly``); the worker
hands it here.

- Xero refusing the refresh (``invalid_grant``: revoked, or already expired) means the firm must
  reconnect: it is recorded as a run that found it would be (``report_refused``): a failed run
  with its ``XPM_NEEDS_RECONNECT`` entry, the firm marked ``needs_reconnect``, its admin emailed
  (SPEC A8); nothing is retried.
- A failure that may pass (Xero's identity service down, Secrets Manager or DynamoDB failing, the
  app's own credentials refused) is raised, so the record fails and SQS delivers it again; one that
  never passes ends in the dead-letter queue, which pages an operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.tokens import FirmDisconnected, NeedsReconnect, TokenStore, TokenStoreError
from xpm_sync.domain.clock import Clock
from xpm_sync.domain.firm import FirmConfig
from xpm_sync.domain.hourly import due_for_keep_alive, refresh_unrecorded
from xpm_sync.observability import logger

KeepAliveOutcome = Literal["refreshed", "not_due", "needs_reconnect", "disconnected"]


@dataclass(frozen=True)
class KeepAlive:
    configs: ConfigRepository
    tokens: TokenStore
    clock: Clock
    # Records the refusal as a failed run (sync.engine.record_connection_lost), given the config
    # read before the refresh: it names the grant Xero refused.
    report_refused: Callable[[FirmConfig], object]

    def __call__(self, firm_id: str) -> KeepAliveOutcome:
        config = self.configs.get(firm_id)
        # Judged again on delivery: the admin may have pressed Start Sync (its runs refresh the
        # tokens) or disconnected since the dispatch, or this is a second delivery of the message.
        if config is None or not keep_alive_due(config, self.tokens, self.clock.now()):
            logger.info("keep-alive no longer due; nothing refreshed", extra={"firm_id": firm_id})
            return "not_due"
        try:
            self.tokens.for_firm(firm_id).access_token(force_refresh=True)
        except FirmDisconnected:
            # The secret went while this ran: a disconnect, whose outcome stands.
            logger.info("firm disconnected during its keep-alive", extra={"firm_id": firm_id})
            return "disconnected"
        except NeedsReconnect:
            logger.warning(
                "Xero refused to refresh an idle connection; the firm must reconnect",
                extra={"firm_id": firm_id},
            )
            self.report_refused(config)
            return "needs_reconnect"
        logger.info("refreshed the tokens of an idle connection", extra={"firm_id": firm_id})
        return "refreshed"


def keep_alive_due(config: FirmConfig, tokens: TokenStore, now: datetime) -> bool:
    """``domain.hourly.due_for_keep_alive``, reading the stored tokens' expiry only for a config
    that records no refresh (no stored tokens: nothing to keep alive)."""
    if not refresh_unrecorded(config):
        return due_for_keep_alive(config, now)
    stored = tokens.load(config.firm_id)
    return stored is not None and due_for_keep_alive(config, now, stored_expires_at=stored.expires_at)


def due_by_stored_tokens(configs: Iterable[FirmConfig], tokens: TokenStore, now: datetime) -> list[str]:
    """The dispatcher's judgement of the idle connections whose config records no refresh: one
    secret read each, eight at a time (there are none once every firm has refreshed once). A
    secret that cannot be read, or judged, leaves its firm unjudged this hour; the others go on."""

    def judged(config: FirmConfig) -> bool:
        try:
            return keep_alive_due(config, tokens, now)
        except TokenStoreError as exc:
            logger.warning(
                "idle connection left unjudged: its tokens could not be read",
                extra={"firm_id": config.firm_id, "detail": str(exc)},
            )
            return False
        except Exception as exc:  # one firm's odd secret never costs the others their keep-alive
            logger.error(
                "idle connection left unjudged: its tokens could not be judged",
                extra={"firm_id": config.firm_id, "error": type(exc).__name__},
            )
            return False

    listed = list(configs)
    with ThreadPoolExecutor(max_workers=8) as pool:
        due = list(pool.map(judged, listed))
    return [config.firm_id for config, is_due in zip(listed, due, strict=True) if is_due]
