"""boto3 clients, made on first use (never at import) and reused while the environment is the same.

The cache key includes the endpoint and region so a test or the local stack that points
``AWS_ENDPOINT_URL`` at moto gets clients for moto; ``clear_clients`` drops them all.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})
_clients: dict[tuple[str, str, str | None, str | None], Any] = {}


def _key(kind: str, service: str) -> tuple[str, str, str | None, str | None]:
    return (kind, service, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_DEFAULT_REGION"))


def client(service: str) -> Any:
    key = _key("client", service)
    if key not in _clients:
        _clients[key] = boto3.session.Session().client(service, config=_RETRIES)
    return _clients[key]


def table(name: str) -> Any:
    key = _key("table", name)
    if key not in _clients:
        _clients[key] = boto3.session.Session().resource("dynamodb", config=_RETRIES).Table(name)
    return _clients[key]


def clear_clients() -> None:
    _clients.clear()
