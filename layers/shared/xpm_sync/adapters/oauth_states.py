"""OAuth ``state`` (SPEC B4): one-time, expiring, bound to the firm and admin who asked to connect.

The callback is public, so the state is its only proof of who started the flow. Each value is 32
random bytes; only its SHA-256 is stored (as the Config table item ``oauth-state#<hash>``), so a
leaked table backup cannot be replayed. Consuming is a conditional delete that returns the old
item: of two callbacks racing with the same state, exactly one gets the item. DynamoDB's TTL
removes expired items late (up to days), so expiry is checked against the clock, never assumed.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from xpm_sync.adapters.dynamodb import Table, is_condition_failure
from xpm_sync.domain.clock import Clock

STATE_TTL = timedelta(minutes=10)
STATE_KEY_PREFIX = "oauth-state#"
_STATE_BYTES = 32
# token_urlsafe(32) is 43 characters; anything else is not one of ours, so skip the table.
_STATE_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43,128}$")


class InvalidState(Exception):
    """The state is malformed, unknown, already used or expired."""


@dataclass(frozen=True)
class OAuthState:
    firm_id: str
    user_sub: str | None


def _key(state: str) -> str:
    return STATE_KEY_PREFIX + hashlib.sha256(state.encode()).hexdigest()


class StateStore:
    """OAuth states in the Config table."""

    def __init__(self, table: Table, clock: Clock) -> None:
        self._table = table
        self._clock = clock

    def issue(self, firm_id: str, user_sub: str | None) -> str:
        state = secrets.token_urlsafe(_STATE_BYTES)
        expires_at = int((self._clock.now() + STATE_TTL).timestamp())
        item: dict[str, Any] = {
            "firm_id": _key(state),
            "kind": "oauth_state",
            "state_firm_id": firm_id,
            "expires_at": expires_at,
        }
        if user_sub is not None:
            item["user_sub"] = user_sub
        self._table.put_item(
            Item=item,
            # 256 random bits never collide; the condition just makes an overwrite impossible.
            ConditionExpression="attribute_not_exists(firm_id)",
        )
        return state

    def consume(self, state: str | None) -> OAuthState:
        """The firm and user the state was issued to; the state can never be used again."""
        if not state or not _STATE_SHAPE.match(state):
            raise InvalidState("state is missing or malformed")
        try:
            answer = self._table.delete_item(
                Key={"firm_id": _key(state)},
                ConditionExpression="attribute_exists(firm_id)",
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                raise InvalidState("state is unknown or already used") from None
            raise
        item = answer.get("Attributes") or {}
        expires_at = item.get("expires_at")
        if expires_at is None or int(expires_at) <= int(self._clock.now().timestamp()):
            raise InvalidState("state has expired")
        firm_id = item.get("state_firm_id")
        user_sub = item.get("user_sub")
        if not isinstance(firm_id, str) or not isinstance(user_sub, str | None):
            raise InvalidState("state item is incomplete")
        return OAuthState(firm_id=firm_id, user_sub=user_sub)
