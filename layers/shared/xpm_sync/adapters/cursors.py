"""Paging cursors the API hands out and can verify (SPEC B5): opaque to callers, signed by us.

A cursor names the list it belongs to (which kind, which firm, which run, which filters) and the
position after which the next page starts, and carries an HMAC-SHA256 of both. A cursor that was
forged, edited, or handed out for another firm or list fails verification: the API answers 400.

The signing key is the deployment's own: 32 random bytes kept as one item of the Config table
(made at first use, by whichever function gets there first), read once per execution environment.
It is no credential of anyone's: it only proves a cursor is one of ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Mapping

from botocore.exceptions import ClientError

from xpm_sync.adapters.dynamodb import Table, is_condition_failure
from xpm_sync.domain.errors import InvalidCursor

KEY_ITEM_ID = "cursor-signing-key#v1"
# A cursor carries a sort key (DynamoDB allows 1,024 bytes: a suggestion's is an XPM UUID, which XPM
# does not bound) and its scope, in base64 (a third longer); anything longer was never ours.
MAX_CURSOR_CHARS = 4096
_SIGNATURE_BYTES = 16

_lock = threading.Lock()
_keys: dict[str, bytes] = {}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorSigner:
    def __init__(self, config_table: Table) -> None:
        self._table = config_table

    def _key(self) -> bytes:
        with _lock:
            key = _keys.get(self._table.name)
            if key is None:
                key = self._load_or_make_key()
                _keys[self._table.name] = key
            return key

    def _load_or_make_key(self) -> bytes:
        made = secrets.token_bytes(32)
        try:
            self._table.put_item(
                Item={"firm_id": KEY_ITEM_ID, "kind": "cursor_key", "key": _b64(made)},
                ConditionExpression="attribute_not_exists(firm_id)",
            )
        except ClientError as error:
            if not is_condition_failure(error):
                raise
            item = self._table.get_item(Key={"firm_id": KEY_ITEM_ID}, ConsistentRead=True).get("Item") or {}
            return _unb64(str(item["key"]))
        return made

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._key(), body, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def encode(self, scope: Mapping[str, str], after: str) -> str:
        """A cursor for the list named by ``scope``, continuing after ``after``."""
        # Unescaped: a sort key of up to 1,024 bytes in any script stays within MAX_CURSOR_CHARS.
        body = json.dumps(
            {"scope": dict(scope), "after": after}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        data = body.encode()
        return f"{_b64(data)}.{_b64(self._sign(data))}"

    def decode(self, cursor: str, scope: Mapping[str, str]) -> str:
        """The position a cursor continues after; InvalidCursor unless we handed it out for ``scope``."""
        if len(cursor) > MAX_CURSOR_CHARS or cursor.count(".") != 1:
            raise InvalidCursor()
        body_text, signature_text = cursor.split(".")
        try:
            data, signature = _unb64(body_text), _unb64(signature_text)
        except (binascii.Error, ValueError):
            raise InvalidCursor() from None
        if not hmac.compare_digest(signature, self._sign(data)):
            raise InvalidCursor()
        try:
            decoded = json.loads(data)
        except ValueError:
            raise InvalidCursor() from None
        if not isinstance(decoded, dict) or decoded.get("scope") != dict(scope):
            raise InvalidCursor()
        after = decoded.get("after")
        if not isinstance(after, str) or not after:
            raise InvalidCursor()
        return after


def forget_keys() -> None:
    """Tests: a new moto table has a new key."""
    with _lock:
        _keys.clear()
