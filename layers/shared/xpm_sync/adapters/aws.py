"""AWS clients, made on first use (never at import) and reused while the environment is the same.

The clients are botocore's (what boto3 hands out), and tables are ``xpm_sync.adapters.dynamodb.Table``
over a DynamoDB client: no handler imports boto3 itself (see ``xpm_sync.adapters.dynamodb``). One botocore
session serves every client: a session caches the service models it loads, and loading
them again for each client costs more than the call it is made for. The cache key includes the
endpoint and region, so a test or the local stack that points ``AWS_ENDPOINT_URL`` at moto gets
clients for moto; ``clear_clients`` drops them all.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import botocore.session
from botocore.config import Config

from xpm_sync.adapters.dynamodb import Table

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})
_lock = threading.Lock()
_session: botocore.session.Session | None = None
_clients: dict[tuple[str, str, str | None, str | None], Any] = {}


def _key(kind: str, service: str) -> tuple[str, str, str | None, str | None]:
    return (kind, service, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_DEFAULT_REGION"))


# SES's SendEmail is not idempotent: a request retried after an answer that never came can send a
# second email (SPEC A5 allows one in 24 hours). The notifier sends once and judges what it gets.
_ONCE = Config(retries={"mode": "standard", "total_max_attempts": 1})
# SQS answers in milliseconds; botocore's 60-second default would let one hung connection (two
# attempts) outlast the dispatcher's 120-second timeout before it could report what it queued.
_QUICK = _RETRIES.merge(Config(connect_timeout=5, read_timeout=10))
_RETRIES_BY_SERVICE = {"ses": _ONCE, "sqs": _QUICK}


def _where(service: str) -> dict[str, Any]:
    # Read per client, not once per session, so the cache key and the client always agree.
    return {
        "region_name": os.environ.get("AWS_DEFAULT_REGION"),
        "endpoint_url": os.environ.get("AWS_ENDPOINT_URL") or None,
        "config": _RETRIES_BY_SERVICE.get(service, _RETRIES),
    }


def _shared_session() -> botocore.session.Session:
    global _session
    if _session is None:
        _session = botocore.session.get_session()
    return _session


def client(service: str) -> Any:
    with _lock:  # sessions are not thread-safe while they make clients
        return _client_locked(service)


def _client_locked(service: str) -> Any:
    key = _key("client", service)
    if key not in _clients:
        _clients[key] = _shared_session().create_client(service, **_where(service))
    return _clients[key]


def table(name: str) -> Table:
    key = _key("table", name)
    with _lock:
        if key not in _clients:
            _clients[key] = Table(_client_locked("dynamodb"), name)
        found: Table = _clients[key]
        return found


def clear_clients() -> None:
    with _lock:
        _clients.clear()
