"""The sample events are in the shapes AWS sends: each one parses with Powertools' models."""

from __future__ import annotations

import json

import pytest
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventModel,
    EventBridgeModel,
    SqsModel,
)

from tests.fixtures.events import EVENTS_DIR, load_event

API_CASES = [
    ("api", "get_config", "GET", "/integrations/xpm"),
    ("api", "put_config", "PUT", "/integrations/xpm"),
    ("api", "delete_config", "DELETE", "/integrations/xpm"),
    ("api", "get_tenants", "GET", "/integrations/xpm/tenants"),
    ("api", "post_sync", "POST", "/integrations/xpm/sync"),
    ("api", "get_runs", "GET", "/integrations/xpm/runs"),
    ("api", "get_run", "GET", "/integrations/xpm/runs/{run_id}"),
    ("api", "get_run_entries", "GET", "/integrations/xpm/runs/{run_id}/entries"),
    ("api", "get_problems", "GET", "/integrations/xpm/problems"),
    ("api", "get_problems_summary", "GET", "/integrations/xpm/problems/summary"),
    ("api", "post_preview", "POST", "/integrations/xpm/preview"),
    ("api", "get_matches", "GET", "/integrations/xpm/matches"),
    ("api", "post_match", "POST", "/integrations/xpm/matches/{xpm_uuid}"),
    ("oauth", "connect", "POST", "/integrations/xpm/connect"),
    ("oauth", "callback", "POST", "/integrations/xpm/callback"),
]


def test_every_sample_event_is_covered_by_these_tests():
    # Given the events directory, When listing it, Then no sample escapes validation.
    on_disk = {(path.parent.name, path.stem) for path in EVENTS_DIR.glob("*/*.json")}
    covered = {(function, case) for function, case, _, _ in API_CASES}
    covered |= {("sync_dispatch", "scheduled"), ("sync_worker", "sqs_batch")}
    assert on_disk == covered


@pytest.mark.parametrize(("function", "case", "method", "resource"), API_CASES)
def test_api_events_are_rest_proxy_events(function, case, method, resource):
    event = APIGatewayProxyEventModel.model_validate(load_event(function, case))

    assert event.httpMethod == method
    assert event.resource == resource
    assert event.requestContext.resourcePath == resource


@pytest.mark.parametrize(("function", "case"), [(function, case) for function, case, _, _ in API_CASES])
def test_every_route_carries_an_admin_of_firm_a(function, case):
    # SPEC B4: no route is public, the OAuth callback included.
    event = APIGatewayProxyEventModel.model_validate(load_event(function, case))

    assert event.requestContext.authorizer is not None
    claims = event.requestContext.authorizer.claims
    assert claims is not None
    assert claims["custom:firm_id"] == "firm-a"
    assert claims["cognito:groups"] == "admin"
    assert claims["sub"]
    assert claims["email"]


def test_the_oauth_callback_posts_code_and_state_in_its_body():
    event = APIGatewayProxyEventModel.model_validate(load_event("oauth", "callback"))

    assert event.queryStringParameters is None
    assert set(json.loads(str(event.body))) == {"code", "state"}


def test_get_run_names_the_run_in_its_path():
    event = APIGatewayProxyEventModel.model_validate(load_event("api", "get_run"))

    assert event.pathParameters is not None
    assert event.path.endswith("/" + event.pathParameters["run_id"])


@pytest.mark.parametrize(("case", "parameter"), [("get_run_entries", "run_id"), ("post_match", "xpm_uuid")])
def test_a_route_with_a_path_parameter_names_it_in_its_path(case, parameter):
    event = APIGatewayProxyEventModel.model_validate(load_event("api", case))

    assert event.pathParameters is not None
    assert "/" + event.pathParameters[parameter] in event.path


def test_the_match_answer_body_has_the_spec_fields():
    event = load_event("api", "post_match")

    assert set(json.loads(event["body"])) == {"action", "client_id"}


def test_put_config_body_has_the_spec_fields():
    event = load_event("api", "put_config")

    assert set(json.loads(event["body"])) == {
        "sync_name",
        "tenant_id",
        "default_office_code",
        "default_partner_user_id",
        "notification_user_id",
    }


def test_the_scheduled_event_is_an_eventbridge_scheduled_event():
    event = EventBridgeModel.model_validate(load_event("sync_dispatch", "scheduled"))

    assert event.source == "aws.events"
    assert event.detail_type == "Scheduled Event"


def test_the_sqs_batch_comes_from_a_fifo_queue():
    event = SqsModel.model_validate(load_event("sync_worker", "sqs_batch"))

    assert len(event.Records) == 2
    bodies = [json.loads(str(record.body)) for record in event.Records]
    assert bodies[0] == {"firm_id": "firm-a", "trigger": "schedule"}
    for record, body in zip(event.Records, bodies, strict=True):
        assert record.eventSourceARN.endswith(".fifo")
        assert record.attributes.MessageGroupId == body["firm_id"]
        assert record.attributes.MessageDeduplicationId
        assert record.attributes.SequenceNumber


class TestOverrides:
    def test_claims_merge_and_none_removes_a_claim(self):
        event = load_event("api", "get_config", claims={"custom:firm_id": "firm-b", "cognito:groups": None})

        claims = event["requestContext"]["authorizer"]["claims"]
        assert claims["custom:firm_id"] == "firm-b"
        assert "cognito:groups" not in claims
        assert claims["sub"]

    def test_claims_none_removes_the_authorizer(self):
        event = load_event("api", "get_config", claims=None)

        assert "authorizer" not in event["requestContext"]

    def test_body_dicts_are_json_encoded_and_strings_kept(self):
        assert json.loads(load_event("api", "put_config", body={"a": 1})["body"]) == {"a": 1}
        assert load_event("api", "put_config", body="not json")["body"] == "not json"

    def test_path_and_query_parameters_are_replaced(self):
        event = load_event("api", "get_run", path_parameters={"run_id": "other"}, query={"cursor": "abc"})

        assert event["pathParameters"] == {"run_id": "other"}
        assert event["multiValueQueryStringParameters"] == {"cursor": ["abc"]}
        APIGatewayProxyEventModel.model_validate(event)

    def test_sqs_bodies_make_one_valid_fifo_record_each(self):
        event = load_event(
            "sync_worker",
            "sqs_batch",
            bodies=[{"firm_id": "firm-c", "trigger": "manual"}, {"firm_id": "firm-d", "trigger": "schedule"}],
        )

        records = SqsModel.model_validate(event).Records
        assert [record.attributes.MessageGroupId for record in records] == ["firm-c", "firm-d"]
        assert len({record.messageId for record in records}) == 2

    def test_each_call_returns_a_fresh_copy(self):
        load_event("api", "get_config")["requestContext"]["authorizer"]["claims"].clear()

        assert load_event("api", "get_config")["requestContext"]["authorizer"]["claims"]
