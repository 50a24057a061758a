"""OAuth ``state`` (SPEC B4): one-time, expiring, bound to the firm and the admin who asked to connect.

The callback is called by the Active setup page as the signed-in admin, so a state is good only for
the firm and the user (``sub``) it was issued to: a consent phished from another practice's XPM
admin, carrying the attacker's state, comes back to the victim's browser and session, never to the
attacker's (RFC 9700 §4.7). Each value is 32 random bytes; only its SHA-256 is stored (as the Config
table item ``oauth-state#<hash>``), so a leaked table backup cannot be replayed. The item also keeps
the PKCE code verifier of that connect, which never leaves the server, and the sync name the admin
gave with it, which only a consent that connects the firm applies.

Consuming is one conditional delete that matches the firm, the user and the expiry together: a
state presented by anyone else, or too late, is refused and left as it was (nobody can burn another
admin's state), and of two callbacks racing with the same state exactly one gets the item.
DynamoDB's TTL removes expired items late (up to days), so expiry is part of the condition, never
assumed from the item being gone.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from botocore.exceptions import ClientError

from xpm_sync.adapters.dynamodb import Table, is_condition_failure
from xpm_sync.domain.clock import Clock

STATE_TTL = timedelta(minutes=10)
STATE_KEY_PREFIX = "oauth-state#"
_STATE_BYTES = 32
# token_urlsafe(32) is 43 characters; anything else is not one of ours, so skip the table.
_STATE_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43,128}$")
_BOUND_TO_CALLER = (
    "attribute_exists(firm_id) AND state_firm_id = :firm_id AND user_sub = :user_sub AND expires_at > :now"
)


class InvalidState(Exception):
    """The state is malformed, unknown, already used, expired, or issued to another firm or user."""


@dataclass(frozen=True)
class OAuthState:
    firm_id: str
    user_sub: str
    code_verifier: str = field(repr=False)
    sync_name: str | None = None


def _key(state: str) -> str:
    return STATE_KEY_PREFIX + hashlib.sha256(state.encode()).hexdigest()


class StateStore:
    """OAuth states in the Config table."""

    def __init__(self, table: Table, clock: Clock) -> None:
        self._table = table
        self._clock = clock

    def issue(self, firm_id: str, user_sub: str, code_verifier: str, *, sync_name: str | None = None) -> str:
        """A fresh state for this firm's admin; the connect's PKCE verifier and sync name are kept
        with it."""
        state = secrets.token_urlsafe(_STATE_BYTES)
        expires_at = int((self._clock.now() + STATE_TTL).timestamp())
        named = {"sync_name": sync_name} if sync_name else {}
        self._table.put_item(
            Item={
                "firm_id": _key(state),
                "kind": "oauth_state",
                "state_firm_id": firm_id,
                "user_sub": user_sub,
                "code_verifier": code_verifier,
                "expires_at": expires_at,
                **named,
            },
            # 256 random bits never collide; the condition just makes an overwrite impossible.
            ConditionExpression="attribute_not_exists(firm_id)",
        )
        return state

    def consume(self, state: str | None, *, firm_id: str, user_sub: str) -> OAuthState:
        """Use up the state, if it was issued to this firm and user and has not expired.

        Otherwise ``InvalidState``, and the item (if any) is untouched: it stays good for the admin
        it belongs to, for the rest of its ten minutes.
        """
        if not state or not _STATE_SHAPE.match(state):
            raise InvalidState("state is missing or malformed")
        try:
            answer = self._table.delete_item(
                Key={"firm_id": _key(state)},
                ConditionExpression=_BOUND_TO_CALLER,
                ExpressionAttributeValues={
                    ":firm_id": firm_id,
                    ":user_sub": user_sub,
                    ":now": int(self._clock.now().timestamp()),
                },
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                raise InvalidState("state is unknown, used, expired or someone else's") from None
            raise
        stored = answer.get("Attributes") or {}
        verifier = stored.get("code_verifier")
        if not isinstance(verifier, str) or not verifier:
            # Issued before PKCE: the code it brings back could not be exchanged anyway.
            raise InvalidState("state item has no PKCE verifier")
        sync_name = stored.get("sync_name")
        return OAuthState(
            firm_id=firm_id,
            user_sub=user_sub,
            code_verifier=verifier,
            sync_name=sync_name if isinstance(sync_name, str) and sync_name else None,
        )
