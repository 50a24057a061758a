"""boto3 clients, made on first use (never at import) and reused while the environment is the same.

One boto3 session serves every client: a session caches the service models it loads, and loading
them again for each client costs more than the call it is made for. The cache key includes the
endpoint and region, so a test or the local stack that points ``AWS_ENDPOINT_URL`` at moto gets
clients for moto; ``clear_clients`` drops them all.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})
_lock = threading.Lock()
_session: boto3.session.Session | None = None
_clients: dict[tuple[str, str, str | None, str | None], Any] = {}


def _key(kind: str, service: str) -> tuple[str, str, str | None, str | None]:
    return (kind, service, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_DEFAULT_REGION"))


def _where() -> dict[str, Any]:
    # Read per client, not once per session, so the cache key and the client always agree.
    return {
        "region_name": os.environ.get("AWS_DEFAULT_REGION"),
        "endpoint_url": os.environ.get("AWS_ENDPOINT_URL") or None,
        "config": _RETRIES,
    }


def _shared_session() -> boto3.session.Session:
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


def client(service: str) -> Any:
    key = _key("client", service)
    with _lock:  # boto3 sessions are not thread-safe while they make clients
        if key not in _clients:
            _clients[key] = _shared_session().client(service, **_where())
        return _clients[key]


def table(name: str) -> Any:
    key = _key("table", name)
    with _lock:
        if key not in _clients:
            _clients[key] = _shared_session().resource("dynamodb", **_where()).Table(name)
        return _clients[key]


def clear_clients() -> None:
    with _lock:
        _clients.clear()
