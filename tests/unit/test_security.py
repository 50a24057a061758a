"""Least privilege, no secret in the repository, deliberate CORS and headers, an unforgeable state.

Extends tests/unit/test_template.py (which pins the sync functions' tables and queue) to every
function the template declares, to the secrets and SES each one reaches, and to the API's routes;
extends tests/unit/test_api_http.py and test_oauth.py with the answers of both API functions
(errors and the callback included) and the state's replay and tampering races.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient
from xpm_sync.api import service

from local.stack import load_template
from tests.fixtures import api as api_fixtures
from tests.fixtures.api import FIRM, ApiHarness
from tests.fixtures.events import load_event
from tests.fixtures.monitoring import problem, record_state, seed_client, suggest, write_states

ROOT = Path(__file__).resolve().parent.parent.parent
FRONTEND_ORIGIN = "http://127.0.0.1:5173"  # FRONTEND_URL of local.stack.function_environment

# The ``api`` harness (API and OAuth functions on moto and the simulator), used as a fixture here.
api = api_fixtures.api

# Function -> table -> the access it needs. "read" is SAM's DynamoDBReadPolicy, "crud" its
# DynamoDBCrudPolicy; "update" and "put" are a single dynamodb:UpdateItem or dynamodb:PutItem
# statement, followed by the partitions it is confined to ("put FIRM#*") when it is.
TABLE_ACCESS: dict[str, dict[str, set[str]]] = {
    "SyncDispatchFunction": {"ConfigTable": {"read"}},
    "SyncWorkerFunction": {
        "ConfigTable": {"crud"},
        "ActiveTable": {"crud"},
        "SyncLogTable": {"crud"},
        "NotifyTable": {"crud"},
    },
    # The API reads Active and the sync log; its one write to Active is an office's default
    # partner, and to the sync log a preview's run (FIRM#) and the answers to suggested links (MATCH#).
    "ApiFunction": {
        "ConfigTable": {"crud"},
        "ActiveTable": {"read", "update"},
        "SyncLogTable": {"read", "put FIRM#*", "update MATCH#*"},
    },
    "OAuthFunction": {"ConfigTable": {"crud"}, "ActiveTable": {"read"}, "SyncLogTable": {"read"}},
}
# Function -> Secrets Manager actions on the firms' token secrets (None: no token secret at all).
TOKEN_SECRET_ACTIONS: dict[str, set[str] | None] = {
    # Reads the expiry of an idle connection's tokens whose config records no refresh.
    "SyncDispatchFunction": {"secretsmanager:GetSecretValue"},
    # Refresh tokens rotate on every use: read and write back, never create or delete.
    "SyncWorkerFunction": {
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
    },
    # The callback stores a firm's first grant: create, never delete.
    "OAuthFunction": {
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:CreateSecret",
    },
    # Disconnect deletes the grant: delete, never create.
    "ApiFunction": {
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:DeleteSecret",
    },
}
# The functions that call Xero with the app's credentials; the dispatcher never does.
READS_APP_SECRET = {"SyncWorkerFunction", "OAuthFunction", "ApiFunction"}
SINGLE_WRITES = {"dynamodb:UpdateItem": "update", "dynamodb:PutItem": "put"}
SENDS_EMAIL = {"SyncWorkerFunction"}
SENDS_TO_QUEUE = {"SyncDispatchFunction", "SyncWorkerFunction", "ApiFunction"}
SAM_TABLE_POLICIES = {"DynamoDBReadPolicy": "read", "DynamoDBCrudPolicy": "crud"}
KNOWN_POLICY_TEMPLATES = {*SAM_TABLE_POLICIES, "SQSSendMessagePolicy", "Statement"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def _statements(properties: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in properties.get("Policies", []) for s in policy.get("Statement", [])]


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return set(actions) if isinstance(actions, list) else {actions}


# The conditions a DynamoDB statement may carry: the partitions, the attributes, no read-back.
_CONDITIONS = {
    "ForAllValues:StringLike": {"dynamodb:LeadingKeys"},
    "ForAllValues:StringEquals": {"dynamodb:Attributes"},
    "StringEqualsIfExists": {"dynamodb:ReturnValues"},
}


def _condition(statement: dict[str, Any], kind: str, key: str) -> list[str] | None:
    condition = statement.get("Condition") or {}
    for given, keys in condition.items():
        assert set(keys) <= _CONDITIONS.get(given, set()), condition
    values = condition.get(kind, {}).get(key)
    if values is None:
        return None
    return list(values) if isinstance(values, list) else [values]


def _leading_keys(statement: dict[str, Any]) -> list[str]:
    """The partition keys a statement confines its writes to (none: the whole table)."""
    return _condition(statement, "ForAllValues:StringLike", "dynamodb:LeadingKeys") or []


def _attributes(statement: dict[str, Any]) -> list[str] | None:
    """The attributes a statement confines its writes to (None: any)."""
    return _condition(statement, "ForAllValues:StringEquals", "dynamodb:Attributes")


_EXPRESSION_WORDS = {
    "SET",
    "REMOVE",
    "ADD",
    "DELETE",
    "AND",
    "OR",
    "NOT",
    "attribute_exists",
    "attribute_not_exists",
    "if_not_exists",
    "begins_with",
    "list_append",
    "size",
}


def _request_attributes(params: dict[str, Any]) -> set[str]:
    """The top-level attributes a write names (IAM's dynamodb:Attributes): its keys, the names it
    aliases and the bare names in its expressions."""
    bare = {
        word
        for expression in (params.get("UpdateExpression", ""), params.get("ConditionExpression", ""))
        for word in re.findall(r"(?<![#:\w])[A-Za-z_]\w*", expression)
    }
    return (
        set(params.get("Key", {}))
        | set(params.get("ExpressionAttributeNames", {}).values())
        | (bare - _EXPRESSION_WORDS)
    )


def _sub(node: Any) -> tuple[str, dict[str, Any]]:
    """``{"Fn::Sub": [text, vars]}`` or ``{"Fn::Sub": text}`` as (text, vars)."""
    value = node["Fn::Sub"]
    return (value, {}) if isinstance(value, str) else (value[0], value[1])


def _env(template: dict[str, Any], name: str) -> dict[str, Any]:
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    variables.update(_functions(template)[name].get("Environment", {}).get("Variables", {}))
    return variables


# --- IAM: every function reaches only its own tables, secrets, queue and email ---------------------


def test_every_function_is_covered_by_these_tests(template: dict[str, Any]) -> None:
    assert set(_functions(template)) == set(TABLE_ACCESS) == set(TOKEN_SECRET_ACTIONS)


def test_no_function_gets_a_role_or_managed_policy_from_outside_the_template(
    template: dict[str, Any],
) -> None:
    for name, properties in _functions(template).items():
        assert "Role" not in properties, name
        for policy in properties.get("Policies", []):
            # A bare string is an AWS managed policy (AmazonDynamoDBFullAccess and the like).
            assert isinstance(policy, dict), f"{name} uses the managed policy {policy}"
            assert set(policy) <= KNOWN_POLICY_TEMPLATES, f"{name}: {set(policy)}"
    assert not [r for r in template["Resources"].values() if str(r["Type"]).startswith("AWS::IAM::")]


@pytest.mark.parametrize("name", sorted(TABLE_ACCESS))
def test_each_function_reaches_its_tables_with_the_access_it_needs_and_no_more(
    template: dict[str, Any], name: str
) -> None:
    properties = _functions(template)[name]
    access: dict[str, set[str]] = {}
    for policy in properties.get("Policies", []):
        for kind, level in SAM_TABLE_POLICIES.items():
            if kind in policy:
                access.setdefault(policy[kind]["TableName"]["Ref"], set()).add(level)
    for statement in _statements(properties):
        dynamodb = {a for a in _actions(statement) if a.startswith("dynamodb:")}
        if dynamodb:
            assert len(dynamodb) == 1, f"{name}: one action a statement, {dynamodb}"
            assert dynamodb <= set(SINGLE_WRITES), f"{name}: {dynamodb}"
            # The table itself: no index, no stream, no other table.
            assert statement["Resource"] == {"Fn::GetAtt": [statement["Resource"]["Fn::GetAtt"][0], "Arn"]}
            level = " ".join([SINGLE_WRITES[dynamodb.pop()], *_leading_keys(statement)])
            access.setdefault(statement["Resource"]["Fn::GetAtt"][0], set()).add(level)

    assert access == TABLE_ACCESS[name]
    # Each table it may touch is one its environment names (the code can find no other).
    env_tables = {v["Ref"] for v in _env(template, name).values() if isinstance(v, dict) and "Ref" in v}
    assert set(access) <= env_tables


# What SAM's policy templates grant on a table (its policy_templates.json).
SAM_TABLE_ACTIONS = {
    "DynamoDBReadPolicy": {"GetItem", "Scan", "Query", "BatchGetItem", "DescribeTable"},
    "DynamoDBCrudPolicy": {
        "GetItem",
        "DeleteItem",
        "PutItem",
        "Scan",
        "Query",
        "UpdateItem",
        "BatchWriteItem",
        "BatchGetItem",
        "DescribeTable",
        "ConditionCheckItem",
    },
}


def _dynamodb_grants(
    properties: dict[str, Any],
) -> list[tuple[str, set[str], list[str], list[str] | None]]:
    """(table, actions, partition key patterns: none for the whole table, attributes: None for any)
    for each grant."""
    grants: list[tuple[str, set[str], list[str], list[str] | None]] = [
        (policy[kind]["TableName"]["Ref"], actions, [], None)
        for policy in properties.get("Policies", [])
        for kind, actions in SAM_TABLE_ACTIONS.items()
        if kind in policy
    ]
    for statement in _statements(properties):
        actions = {a.removeprefix("dynamodb:") for a in _actions(statement) if a.startswith("dynamodb:")}
        if actions:
            table = statement["Resource"]["Fn::GetAtt"][0]
            grants.append((table, actions, _leading_keys(statement), _attributes(statement)))
    return grants


def _partition_key(params: dict[str, Any]) -> str | None:
    item = params.get("Key") or params.get("Item") or {}
    value = item.get("pk") or item.get("firm_id")
    return str(value["S"]) if isinstance(value, dict) else None


def test_the_api_functions_policy_allows_every_dynamodb_call_its_routes_make(
    api: ApiHarness, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The routes of issues 19, 21 and 22 write to the sync log: each call they make, read or
    write, is one the ApiFunction's policy allows, on that table and in that partition."""
    api.connect()
    api.seed_office("SYD")
    api.seed_user("user-admin-1")
    seed_client(api.names, FIRM, "c-1", legal_name="Acme")
    suggest(api.names, FIRM, "x-1", "c-1")
    write_states(api.names, FIRM, [record_state("client", "x-2", "Bravo", problem("PARTNER_MISSING"))])
    calls: list[tuple[str, dict[str, Any]]] = []
    make_call = BaseClient._make_api_call

    def recording(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "dynamodb":
            calls.append((operation, params))
        return make_call(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    saved = api.call_api("put_config", body=api.setup_body("SYD", default_partner_user_id="user-admin-1"))
    run_id = api.call_api("post_preview").json["run_id"]
    answers = [
        saved,
        api.call_api("get_runs"),
        api.call_api("get_run", path=f"/integrations/xpm/runs/{run_id}", path_parameters={"run_id": run_id}),
        api.call_api(
            "get_run_entries",
            path=f"/integrations/xpm/runs/{run_id}/entries",
            path_parameters={"run_id": run_id},
            query=None,
        ),
        api.call_api("get_problems", query=None),
        api.call_api("get_problems_summary"),
        api.call_api("get_matches"),
        api.call_api(
            "post_match",
            path="/integrations/xpm/matches/x-1",
            path_parameters={"xpm_uuid": "x-1"},
            body={"action": "link", "client_id": "c-1"},
        ),
    ]

    assert [a.status for a in answers] == [200] * len(answers), [a.text for a in answers if a.status != 200]
    tables = {
        api.names.config_table: "ConfigTable",
        api.names.active_table: "ActiveTable",
        api.names.sync_log_table: "SyncLogTable",
    }
    grants = _dynamodb_grants(_functions(template)["ApiFunction"])
    written = set()
    for operation, params in calls:
        table, partition = tables[params["TableName"]], _partition_key(params)
        allowed = [
            keys
            for granted_table, actions, keys, attributes in grants
            if granted_table == table
            and operation in actions
            and (not keys or any(fnmatch.fnmatchcase(partition or "", key) for key in keys))
            and (attributes is None or _request_attributes(params) <= set(attributes))
        ]
        assert allowed, f"{operation} on {table} ({partition}) is not allowed"
        if operation in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"):
            written.add((operation, table, (partition or "").split("#")[0]))
    assert {("PutItem", "SyncLogTable", "FIRM"), ("UpdateItem", "SyncLogTable", "MATCH")} <= written


@pytest.mark.parametrize("name", sorted(TOKEN_SECRET_ACTIONS))
def test_each_function_reaches_only_the_firm_token_secrets_and_the_app_secret(
    template: dict[str, Any], name: str
) -> None:
    env = _env(template, name)
    statements = [s for s in _statements(_functions(template)[name]) if "secretsmanager" in str(s["Action"])]
    expected = TOKEN_SECRET_ACTIONS[name]
    if expected is None:
        assert statements == []
        assert "TOKEN_SECRET_PREFIX" not in env
        assert "APP_SECRET_ID" not in env
        return
    by_sid = {s["Sid"]: s for s in statements}
    assert set(by_sid) == ({"FirmTokens", "XeroAppSecret"} if name in READS_APP_SECRET else {"FirmTokens"})

    tokens_arn, tokens_vars = _sub(by_sid["FirmTokens"]["Resource"])
    assert _actions(by_sid["FirmTokens"]) == expected
    assert tokens_arn.endswith(":secret:${Prefix}*")
    # The prefix the policy opens is exactly the prefix the code builds secret names from.
    assert tokens_vars["Prefix"] == env["TOKEN_SECRET_PREFIX"]
    if name not in READS_APP_SECRET:
        assert "APP_SECRET_ID" not in env
        return

    app_arn, app_vars = _sub(by_sid["XeroAppSecret"]["Resource"])
    assert _actions(by_sid["XeroAppSecret"]) == {"secretsmanager:GetSecretValue"}, (
        "the app secret is read-only"
    )
    assert app_arn.endswith(":secret:${Name}-??????"), "exactly one secret (plus AWS's random suffix)"
    assert app_vars["Name"] == env["APP_SECRET_ID"]
    for arn in (tokens_arn, app_arn):
        assert arn.startswith("arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:")


def test_the_token_prefix_and_app_secret_cannot_overlap(template: dict[str, Any]) -> None:
    """A firm id can never name the app secret: the app secret lives outside the firms' prefix."""
    env = _env(template, "SyncWorkerFunction")
    prefix_default = env["TOKEN_SECRET_PREFIX"]["Fn::If"][2]["Fn::Sub"]
    app_default = env["APP_SECRET_ID"]["Fn::If"][2]["Fn::Sub"]
    assert not app_default.startswith(prefix_default)


@pytest.mark.parametrize("name", sorted(TABLE_ACCESS))
def test_only_the_worker_sends_email_and_only_as_the_notification_sender(
    template: dict[str, Any], name: str
) -> None:
    ses = [s for s in _statements(_functions(template)[name]) if "ses:" in str(s["Action"])]
    if name not in SENDS_EMAIL:
        assert ses == []
        return
    [statement] = ses
    assert _actions(statement) == {"ses:SendEmail"}  # what the notifier calls, nothing more
    assert statement["Condition"] == {"StringEquals": {"ses:FromAddress": {"Ref": "NotifyFromEmail"}}}


@pytest.mark.parametrize("name", sorted(TABLE_ACCESS))
def test_only_the_queue_senders_reach_the_queue_and_only_to_send(template: dict[str, Any], name: str) -> None:
    properties = _functions(template)[name]
    queues = [
        p["SQSSendMessagePolicy"] for p in properties.get("Policies", []) if "SQSSendMessagePolicy" in p
    ]
    if name not in SENDS_TO_QUEUE:
        assert queues == []
        return
    assert queues == [{"QueueName": {"Fn::GetAtt": ["SyncQueue", "QueueName"]}}]
    other_sqs = [s for s in _statements(properties) if "sqs:" in str(s["Action"])]
    if name != "SyncWorkerFunction":
        assert other_sqs == []
        return
    # The worker also brings a record it failed back sooner than the queue's visibility timeout.
    [statement] = other_sqs
    assert _actions(statement) == {"sqs:ChangeMessageVisibility"}
    assert statement["Resource"] == {"Fn::GetAtt": ["SyncQueue", "Arn"]}


@pytest.mark.parametrize("name", sorted(TABLE_ACCESS))
def test_no_statement_grants_everything(template: dict[str, Any], name: str) -> None:
    for statement in _statements(_functions(template)[name]):
        assert statement["Effect"] == "Allow"
        assert statement["Resource"] != "*"
        assert not [a for a in _actions(statement) if a == "*" or a.endswith(":*")]
        assert "NotAction" not in statement
        assert "NotResource" not in statement


def test_api_gateway_may_invoke_each_api_function_only_from_this_api(template: dict[str, Any]) -> None:
    permissions = [
        r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Permission"
    ]
    assert {p["FunctionName"]["Ref"] for p in permissions} == {"ApiFunction", "OAuthFunction"}
    for permission in permissions:
        assert permission["Principal"] == "apigateway.amazonaws.com"
        source, _ = _sub(permission["SourceArn"])
        assert ":${XpmApi}/" in source
        assert source.endswith("/integrations/xpm/*") or source.endswith("/integrations/xpm*")


def test_no_route_is_public(template: dict[str, Any]) -> None:
    """SPEC B4: every route, the OAuth callback included, needs the Cognito authorizer."""
    api_properties = template["Resources"]["XpmApi"]["Properties"]
    assert api_properties["Auth"]["DefaultAuthorizer"] == "CognitoAuthorizer"
    operations = {
        (method, path): operation
        for path, item in api_properties["DefinitionBody"]["paths"].items()
        for method, operation in item.items()
    }
    assert ("post", "/integrations/xpm/callback") in operations
    assert ("get", "/integrations/xpm/callback") not in operations, "SPEC B5: there is no GET callback"
    public = {
        route
        for route, operation in operations.items()
        if operation.get("security") != [{"CognitoAuthorizer": []}]
    }
    assert public == set()
    assert "NONE" not in str(api_properties["DefinitionBody"])


def test_xero_sends_the_browser_to_the_active_setup_page_not_to_the_api(template: dict[str, Any]) -> None:
    """SPEC A6: OAUTH_REDIRECT_URI is {FRONTEND_URL}/admin/integrations/xpm/callback; the page posts
    the code and state as the signed-in admin, so nothing at the API answers a browser unsigned."""
    redirect = _env(template, "OAuthFunction")["OAUTH_REDIRECT_URI"]
    assert redirect == {"Fn::Sub": "${FrontendUrl}/admin/integrations/xpm/callback"}
    output = template["Outputs"]["OAuthRedirectUri"]["Value"]
    assert output == redirect


def test_the_api_allows_only_the_frontend_origin(template: dict[str, Any]) -> None:
    api_properties = template["Resources"]["XpmApi"]["Properties"]
    frontend = {"Fn::Sub": "'${FrontendUrl}'"}
    assert api_properties["Cors"]["AllowOrigin"] == frontend
    assert "AllowCredentials" not in api_properties["Cors"]
    for response in api_properties["GatewayResponses"].values():
        assert response["ResponseParameters"]["Headers"]["Access-Control-Allow-Origin"] == frontend


def test_queues_are_encrypted(template: dict[str, Any]) -> None:
    for name in ("SyncQueue", "SyncDeadLetterQueue"):
        assert template["Resources"][name]["Properties"]["SqsManagedSseEnabled"] is True


# --- no secret in the repository -----------------------------------------------------------------

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    "credential value": re.compile(
        r"(?i)\b(?:client_secret|refresh_token|access_token|aws_secret_access_key|password|api_key)"
        r"[\"']?\s*[:=]\s*[\"']([A-Za-z0-9+/_.~=-]{24,})[\"']"
    ),
    "Slack or GitHub token": re.compile(r"\b(?:xox[abpr]-[0-9A-Za-z-]{10,}|gh[pousr]_[0-9A-Za-z]{36})\b"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}
# Sample data (fake tokens in sample events, tests' own fixtures) lives only here.
TEST_DATA = ("tests/", "events/")
FORBIDDEN_FILES = re.compile(r"(?:^|/)(?:\.env(?:\..+)?|.+\.pem|.+\.key|id_rsa|credentials)$")


def _tracked_files() -> list[str]:
    answer = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30)
    return [name for name in answer.stdout.decode().split("\0") if name]


def test_no_credential_file_is_tracked() -> None:
    files = _tracked_files()
    assert files, "git ls-files found nothing: the scan below would prove nothing"
    assert [f for f in files if FORBIDDEN_FILES.search(f) and not f.endswith(".env.example")] == []


def test_no_secret_is_committed_outside_test_data() -> None:
    found: list[str] = []
    for name in _tracked_files():
        if name.startswith(TEST_DATA):
            continue
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the working tree, not yet committed
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        for kind, pattern in SECRET_PATTERNS.items():
            found.extend(f"{name}: {kind}" for _ in pattern.finditer(text))
    assert found == []


@pytest.mark.parametrize(
    "planted",
    [
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "-----BEGIN " + "RSA PRIVATE KEY-----",
        '"refresh_token": "' + "d8Fq2LrT0w9Zp4Xv6Ks1Nb3Mh7Jc5Ye8" + '"',
        "client_secret = '" + "Q2hlY2tpbmdUaGVDaGVja2VyV29ya3M=" + "'",
    ],
)
def test_the_secret_scan_finds_what_it_looks_for(planted: str) -> None:
    assert any(pattern.search(planted) for pattern in SECRET_PATTERNS.values())


# --- API answers: deliberate CORS and headers, nothing about the stack ---------------------------

LEAKY_HEADERS = {"server", "x-powered-by", "x-aspnet-version", "x-amzn-remapped-server"}


def _assert_deliberate_headers(headers: dict[str, str]) -> None:
    lowered = {name.lower(): value for name, value in headers.items()}
    assert lowered["access-control-allow-origin"] == FRONTEND_ORIGIN
    assert lowered.get("vary") == "Origin"
    assert "access-control-allow-credentials" not in lowered
    assert not LEAKY_HEADERS & set(lowered)


def test_answers_of_both_functions_carry_the_frontend_origin_and_no_stack_details(api: ApiHarness) -> None:
    answers = [
        api.call_oauth("connect"),
        api.call_oauth("connect", body="{not json"),
        api.call_oauth("callback", body={"state": "made-up", "code": "x"}),
        api.call_oauth("callback", body={"state": "made-up", "code": "x"}, claims=None),
        api.call_oauth("callback", body="[" * 5000),
        api.call_api("get_config"),
        api.call_api("get_runs", query={"limit": "zero"}),
        api.call_api("get_config", path="/integrations/xpm/nothing-here"),
    ]

    for answer in answers:
        _assert_deliberate_headers(answer.headers)
        assert "Traceback" not in answer.text
        assert "xpm_sync" not in answer.text


def test_an_unexpected_error_is_a_plain_500_without_the_exception(
    api: ApiHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret-internal-detail at /var/task/xpm_sync/api/service.py")

    monkeypatch.setattr(service.IntegrationService, "get_config", broken)

    answer = api.call_api("get_config")

    assert answer.status == 500
    _assert_deliberate_headers(answer.headers)
    assert answer.json == {
        "error": {"code": "INTERNAL_ERROR", "message": "Something went wrong on our side; try again later."}
    }


def test_there_is_no_get_callback(api: ApiHarness) -> None:
    event = load_event("oauth", "callback", body=None, query=api.consent(api.start_connect()))
    event["httpMethod"] = event["requestContext"]["httpMethod"] = "GET"

    answer = api.send_oauth(event)

    assert answer.status == 404
    assert answer.json["error"]["code"] == "NOT_FOUND"
    assert api.secret(FIRM) is None
    assert not api.sim.calls_to("/connect/token")


# --- the callback's state: one use, unforgeable --------------------------------------------------


def test_two_callbacks_racing_with_one_state_connect_once(api: ApiHarness) -> None:
    sent_back = api.consent(api.start_connect())
    answers: list[str] = []
    start = threading.Barrier(4)

    def call_back() -> None:
        start.wait()
        answer = api.callback(dict(sent_back))
        answers.append(answer.json["status"] if answer.status == 200 else answer.json["error"]["code"])

    threads = [threading.Thread(target=call_back) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(answers) == ["OAUTH_STATE_INVALID"] * 3 + ["connected"]
    assert len(api.sim.calls_to("/connect/token")) == 1, "the code is exchanged once"


@pytest.mark.parametrize("position", [0, 21, -1])
def test_a_valid_state_with_one_character_changed_is_refused(api: ApiHarness, position: int) -> None:
    sent_back = api.consent(api.start_connect())
    state = sent_back["state"]
    swapped = "A" if state[position] != "A" else "B"
    sent_back["state"] = (
        state[:position] + swapped + state[position + 1 :] if position != -1 else state[:-1] + swapped
    )

    answer = api.callback(sent_back)

    assert answer.status == 400
    assert answer.json["error"]["code"] == "OAUTH_STATE_INVALID"
    assert api.secret(FIRM) is None
    assert not api.sim.calls_to("/connect/token")
    # The real state is still good for its one use: tampering did not burn it.
    sent_back["state"] = state
    assert api.callback(sent_back).status == 200
