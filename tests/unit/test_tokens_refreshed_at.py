"""SPEC A6's keep-alive needs to know when a firm's tokens were last refreshed: the token store
notes it in the firm's config (``tokens_refreshed_at``) whenever it stores a grant or a refresh."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.adapters.config_table import ConfigRepository
from xpm_sync.adapters.tokens import TokenStore
from xpm_sync.adapters.xero_identity import TokenSet
from xpm_sync.domain.clock import iso, parse_iso

from local.stack import StackNames
from tests.fixtures.api import FIRM, ApiHarness

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GRANT = TokenSet(access_token="access-1", refresh_token="refresh-1", expires_at=2_000_000_000)


class FixedClock:
    def now(self) -> datetime:
        return NOW


class UnwritableConfigs:
    """A Config table that throttles every write, as DynamoDB may."""

    def record_tokens_refreshed(self, firm_id: str, at: datetime) -> bool:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "UpdateItem")


def store(stack: StackNames, configs: Any) -> TokenStore:
    return TokenStore(
        secrets_client=aws_clients.client("secretsmanager"),
        prefix=stack.token_secret_prefix,
        identity=None,
        clock=FixedClock(),
        configs=configs,
    )


@pytest.fixture
def stack(aws: StackNames) -> StackNames:
    aws_clients.clear_clients()
    return aws


def test_a_grant_stored_at_connect_is_noted_as_refreshed(stack: StackNames) -> None:
    # Given a firm that started connecting (its config item exists)
    configs = ConfigRepository(aws_clients.table(stack.config_table))
    configs.update("firm-a", status="not_connected")

    # When the callback stores its new grant
    store(stack, configs).save("firm-a", GRANT)

    # Then the config says the tokens were refreshed now
    config = configs.get("firm-a")
    assert config is not None
    assert config.tokens_refreshed_at == iso(NOW)


def test_the_note_never_creates_a_config_for_a_firm_that_has_none(stack: StackNames) -> None:
    configs = ConfigRepository(aws_clients.table(stack.config_table))

    assert configs.record_tokens_refreshed("firm-gone", NOW) is False
    assert configs.get("firm-gone") is None


def test_a_note_that_cannot_be_written_leaves_the_stored_tokens_standing(
    stack: StackNames, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a Config table that refuses the note
    tokens = store(stack, UnwritableConfigs())

    # When a grant is stored
    tokens.save("firm-a", GRANT)

    # Then the tokens are stored all the same (the firm's connection is what matters), and the lost
    # note is logged: at worst the keep-alive refreshes the connection early
    stored = tokens.load("firm-a")
    assert stored is not None
    assert stored.refresh_token == "refresh-1"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == "could not record when the firm's tokens were refreshed"


def test_the_oauth_callback_notes_the_grant_it_stores(api: ApiHarness) -> None:
    # When an admin connects through the OAuth callback
    api.connect()

    # Then the firm's config notes when its tokens were stored (the keep-alive counts from there)
    noted = parse_iso(api.config(FIRM)["tokens_refreshed_at"])
    assert timedelta(0) <= api.clock.now() - noted < timedelta(minutes=1)
