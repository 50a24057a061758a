"""Each function's settings come from its environment variables (SPEC B2), by their exact names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from xpm_sync.settings import DispatchSettings, WorkerSettings, load_settings

WORKER_ENV = {
    "CONFIG_TABLE": "config",
    "ACTIVE_TABLE": "active",
    "SYNC_LOG_TABLE": "sync-log",
    "NOTIFY_TABLE": "notify",
    "SYNC_QUEUE_URL": "https://sqs.example/sync.fifo",
    "NOTIFY_FROM_EMAIL": "sync@example.com",
    "FRONTEND_URL": "https://app.example.com",
    "APP_SECRET_ID": "xpm-sync/app",
    "TOKEN_SECRET_PREFIX": "xpm-sync/tokens/",
}


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("XERO_LOGIN_URL", "XERO_IDENTITY_URL", "XERO_API_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in WORKER_ENV.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_values_come_from_the_variables_and_xero_urls_default_to_xero(worker_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(WorkerSettings)

    assert settings.config_table == "config"
    assert settings.sync_queue_url == "https://sqs.example/sync.fifo"
    assert settings.token_secret_prefix == "xpm-sync/tokens/"
    assert settings.xero_api_url == "https://api.xero.com"
    assert settings.xero_identity_url == "https://identity.xero.com"
    assert settings.xero_login_url == "https://login.xero.com"


def test_a_changed_variable_is_read_again(worker_env: pytest.MonkeyPatch) -> None:
    first = load_settings(WorkerSettings)
    worker_env.setenv("XERO_API_URL", "http://127.0.0.1:9000")

    second = load_settings(WorkerSettings)

    assert first.xero_api_url == "https://api.xero.com"
    assert second.xero_api_url == "http://127.0.0.1:9000"
    assert load_settings(WorkerSettings) is second  # same environment: the validated settings are reused


def test_a_missing_variable_is_named(worker_env: pytest.MonkeyPatch) -> None:
    worker_env.delenv("SYNC_LOG_TABLE")

    with pytest.raises(ValidationError) as raised:
        load_settings(WorkerSettings)

    assert [error["loc"] for error in raised.value.errors()] == [("SYNC_LOG_TABLE",)]


def test_names_are_case_sensitive_and_other_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFIG_TABLE", raising=False)
    monkeypatch.setenv("config_table", "lower-case")
    monkeypatch.setenv("SYNC_QUEUE_URL", "https://sqs.example/sync.fifo")

    with pytest.raises(ValidationError) as raised:
        load_settings(DispatchSettings)

    assert [error["loc"] for error in raised.value.errors()] == [("CONFIG_TABLE",)]


def test_settings_are_read_only(worker_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(WorkerSettings)

    with pytest.raises(ValidationError):
        settings.config_table = "other"  # type: ignore[misc]
