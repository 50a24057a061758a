"""One settings model per function (SPEC B2), read from the environment at call time.

``load_settings`` caches per class and per environment snapshot, so a warm Lambda does not
re-validate on every call while tests (and the local stack) can still change the environment.
Plain pydantic models read from ``os.environ``: pydantic-settings would add its dotenv, CLI and
secrets sources (about 25 ms) to every cold start for a dozen variables.
"""

from __future__ import annotations

import os
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field


class _Settings(BaseModel):
    # Fields are read by their alias: the variable's exact (case-sensitive) name.
    model_config = ConfigDict(extra="ignore", frozen=True)


class XeroSettings(_Settings):
    xero_login_url: str = Field("https://login.xero.com", alias="XERO_LOGIN_URL")
    xero_identity_url: str = Field("https://identity.xero.com", alias="XERO_IDENTITY_URL")
    xero_api_url: str = Field("https://api.xero.com", alias="XERO_API_URL")
    app_secret_id: str = Field(alias="APP_SECRET_ID")
    token_secret_prefix: str = Field(alias="TOKEN_SECRET_PREFIX")
    # Where a token refresh takes its lease (one writer per firm).
    config_table: str = Field(alias="CONFIG_TABLE")


class DispatchSettings(_Settings):
    config_table: str = Field(alias="CONFIG_TABLE")
    sync_queue_url: str = Field(alias="SYNC_QUEUE_URL")
    # Read-only: the age of an idle connection whose config records no refresh (domain.hourly).
    token_secret_prefix: str | None = Field(None, alias="TOKEN_SECRET_PREFIX")


class FrontendSettings(_Settings):
    """Where the Active frontend lives: the only origin allowed to read API answers (CORS)."""

    frontend_url: str = Field(alias="FRONTEND_URL")


class FirmDataSettings(XeroSettings, FrontendSettings):
    """What the functions that read a firm's Active records and sync log share: those tables, Xero,
    and the Active frontend (the worker's emails link to it; the API's answers are read by it)."""

    active_table: str = Field(alias="ACTIVE_TABLE")
    sync_log_table: str = Field(alias="SYNC_LOG_TABLE")


class WorkerSettings(FirmDataSettings):
    notify_table: str = Field(alias="NOTIFY_TABLE")
    sync_queue_url: str = Field(alias="SYNC_QUEUE_URL")
    notify_from_email: str = Field(alias="NOTIFY_FROM_EMAIL")


class OAuthSettings(FirmDataSettings):
    """Connect and callback: the callback answers with the config, as GET does (SPEC B5)."""

    oauth_redirect_uri: str = Field(alias="OAUTH_REDIRECT_URI")


class ApiSettings(FirmDataSettings):
    sync_queue_url: str = Field(alias="SYNC_QUEUE_URL")


S = TypeVar("S", bound=_Settings)
_cache: dict[tuple[type[_Settings], tuple[str | None, ...]], _Settings] = {}


def _env_names(cls: type[_Settings]) -> tuple[str, ...]:
    return tuple(field.alias or name for name, field in cls.model_fields.items())


def load_settings(cls: type[S]) -> S:
    """The function's settings; a missing required variable raises a ValidationError naming it."""
    present = {name: os.environ[name] for name in _env_names(cls) if name in os.environ}
    key = (cls, tuple(present.get(name) for name in _env_names(cls)))
    cached = _cache.get(key)
    if cached is None:
        cached = cls.model_validate(present)
        _cache[key] = cached
    assert isinstance(cached, cls)
    return cached
