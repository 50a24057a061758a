"""SPEC B1 names the handlers; a caller may invoke them with no Lambda context at all."""

from __future__ import annotations

from functions.api.app import lambda_handler as api_handler
from functions.oauth.app import lambda_handler as oauth_handler
from local.stack import StackNames
from tests.fixtures.events import load_event


def test_the_api_answers_with_no_context(aws: StackNames) -> None:
    answer = api_handler(load_event("api", "get_config"), None)

    assert answer["statusCode"] == 200
    assert answer["headers"]["Content-Type"].startswith("application/json")


def test_the_callback_answers_with_no_context(aws: StackNames) -> None:
    answer = oauth_handler(load_event("oauth", "callback"), None)

    # The sample's state was never issued: refused in the B5 error shape.
    assert answer["statusCode"] == 400
    assert answer["headers"]["Content-Type"].startswith("application/json")
    assert '"OAUTH_STATE_INVALID"' in answer["body"]
