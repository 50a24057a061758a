"""template.yaml keeps SPEC B3's tables, the FIFO queue contract and least-privilege policies,
and the local stack builds exactly what it declares."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from xpm_sync.adapters.sync_queue import FIRST_RETRY_AFTER_SECONDS, MAX_RECEIVES, retry_delay
from xpm_sync.settings import ApiSettings, DispatchSettings, OAuthSettings, WorkerSettings

from local.stack import TABLES, create_resources, load_template

ROOT = Path(__file__).resolve().parent.parent.parent

# Function -> its settings model: its environment must satisfy it.
FUNCTION_SETTINGS: dict[str, Any] = {
    "SyncDispatchFunction": DispatchSettings,
    "SyncWorkerFunction": WorkerSettings,
    "ApiFunction": ApiSettings,
    "OAuthFunction": OAuthSettings,
}
# Function -> every resource its policies may name (tables, queues).
FUNCTION_RESOURCES = {
    "SyncDispatchFunction": {"ConfigTable", "SyncQueue"},
    "SyncWorkerFunction": {"ConfigTable", "ActiveTable", "SyncLogTable", "NotifyTable", "SyncQueue"},
    "ApiFunction": {"ConfigTable", "ActiveTable", "SyncLogTable", "SyncQueue"},
    "OAuthFunction": {"ConfigTable", "ActiveTable", "SyncLogTable"},
}

SPEC_TABLES: dict[str, dict[str, Any]] = {
    "ActiveTable": {"keys": [("pk", "HASH"), ("sk", "RANGE")], "ttl": None, "pitr": True, "retain": True},
    "ConfigTable": {"keys": [("firm_id", "HASH")], "ttl": "expires_at", "pitr": True, "retain": True},
    # Runs expire; the state kept per record (retry copies, open problems, the admin's answers to
    # suggested links) does not, and is kept and backed up (the TTL probe of 2026-12-07).
    "SyncLogTable": {
        "keys": [("pk", "HASH"), ("sk", "RANGE")],
        "ttl": "expires_at",
        "pitr": True,
        "retain": True,
    },
    "NotifyTable": {"keys": [("firm_id", "HASH")], "ttl": "expires_at", "pitr": False, "retain": False},
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources_of_type(template, kind):
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def referenced_resources(node, resources) -> set[str]:
    """Logical ids named anywhere in ``node`` through Ref, GetAtt or ${...} in Sub."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and value in resources:
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found |= {name for name in resources if "${" + name in text}
            found |= referenced_resources(value, resources)
    elif isinstance(node, list):
        for item in node:
            found |= referenced_resources(item, resources)
    return found


def function_environment(template, name) -> dict[str, Any]:
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    variables.update(template["Resources"][name]["Properties"]["Environment"]["Variables"])
    return variables


class TestTables:
    def test_the_template_declares_exactly_the_spec_tables(self, template):
        assert set(resources_of_type(template, "AWS::DynamoDB::Table")) == set(SPEC_TABLES)

    @pytest.mark.parametrize("name", sorted(SPEC_TABLES))
    def test_keys_are_strings_in_the_spec_layout(self, template, name):
        properties = template["Resources"][name]["Properties"]

        keys = [(key["AttributeName"], key["KeyType"]) for key in properties["KeySchema"]]
        assert keys == SPEC_TABLES[name]["keys"]
        index_keys = {
            key["AttributeName"]
            for index in properties.get("GlobalSecondaryIndexes", [])
            for key in index["KeySchema"]
        }
        assert {(a["AttributeName"], a["AttributeType"]) for a in properties["AttributeDefinitions"]} == {
            (key, "S") for key in {key for key, _ in keys} | index_keys
        }
        assert "LocalSecondaryIndexes" not in properties

    def test_the_active_table_finds_a_firms_records_by_xpm_uuid_and_by_code(self, template):
        # SPEC A7/B3: an incremental run reads by key or index, within the firm's partition.
        indexes = {
            index["IndexName"]: [(key["AttributeName"], key["KeyType"]) for key in index["KeySchema"]]
            for index in template["Resources"]["ActiveTable"]["Properties"]["GlobalSecondaryIndexes"]
        }
        assert indexes == {
            "by_xpm_uuid": [("pk", "HASH"), ("xpm_uuid", "RANGE")],
            "by_code": [("pk", "HASH"), ("code", "RANGE")],
        }
        for name in SPEC_TABLES:
            if name != "ActiveTable":
                assert "GlobalSecondaryIndexes" not in template["Resources"][name]["Properties"]

    @pytest.mark.parametrize("name", sorted(SPEC_TABLES))
    def test_on_demand_encrypted_with_the_spec_ttl_and_backups(self, template, name):
        resource = template["Resources"][name]
        properties = resource["Properties"]
        spec = SPEC_TABLES[name]

        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["SSESpecification"]["SSEEnabled"] is True
        ttl = properties.get("TimeToLiveSpecification")
        ttl_attribute = ttl["AttributeName"] if ttl and ttl["Enabled"] else None
        assert ttl_attribute == spec["ttl"]
        pitr = properties.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled", False)
        assert pitr is spec["pitr"]
        expected_policy = "Retain" if spec["retain"] else "Delete"
        assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == expected_policy


class TestQueue:
    def test_the_sync_queue_is_fifo_with_content_based_dedup_and_a_dead_letter_queue(self, template):
        queue = template["Resources"]["SyncQueue"]["Properties"]

        assert queue["FifoQueue"] is True
        assert queue["ContentBasedDeduplication"] is True
        assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["SyncDeadLetterQueue", "Arn"]}
        assert queue["RedrivePolicy"]["maxReceiveCount"] == 3

    def test_the_dead_letter_queue_is_fifo_and_keeps_messages_14_days(self, template):
        dlq = template["Resources"]["SyncDeadLetterQueue"]["Properties"]

        assert dlq["FifoQueue"] is True
        assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600

    def test_visibility_timeout_is_at_least_six_worker_timeouts(self, template):
        worker = template["Resources"]["SyncWorkerFunction"]["Properties"]

        assert template["Resources"]["SyncQueue"]["Properties"]["VisibilityTimeout"] >= 6 * worker["Timeout"]

    def test_one_firms_run_never_waits_behind_anothers_the_worker_takes_one_message_per_invocation(
        self, template
    ):
        # Issue 19 (fair workers): with a batch of several firms, the last waits for every run
        # before it. One message per invocation; partial batch failures stay reported per record.
        worker = template["Resources"]["SyncWorkerFunction"]["Properties"]

        (event,) = worker["Events"].values()
        assert event["Type"] == "SQS"
        assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["SyncQueue", "Arn"]}
        assert event["Properties"]["BatchSize"] == 1
        assert "MaximumBatchingWindowInSeconds" not in event["Properties"]
        assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert worker["Timeout"] == 900

    def test_the_event_source_starts_no_more_runs_than_the_worker_may_run(self, template):
        # Lambda's SQS pollers do not see reserved concurrency: past it they are throttled, and a
        # throttled message waits out the visibility timeout, holding its firm's group, and counts
        # a receive towards the dead-letter queue without having run (the probe of 2026-12-07, late).
        worker = template["Resources"]["SyncWorkerFunction"]["Properties"]
        (event,) = worker["Events"].values()

        reserved = worker["ReservedConcurrentExecutions"]
        scaling = event["Properties"]["ScalingConfig"]
        assert reserved == {
            "Fn::If": [
                "HasWorkerReservedConcurrency",
                {"Ref": "WorkerReservedConcurrency"},
                {"Ref": "AWS::NoValue"},
            ]
        }
        assert scaling == {
            "Fn::If": [
                "HasWorkerReservedConcurrency",
                {"MaximumConcurrency": {"Ref": "WorkerReservedConcurrency"}},
                {"Ref": "AWS::NoValue"},
            ]
        }
        # An event source's maximum concurrency is 2 to 1,000: the one value it cannot share is refused.
        (rule,) = template["Rules"].values()
        assert rule["Assertions"][0]["Assert"] == {
            "Fn::Not": [{"Fn::Equals": [{"Ref": "WorkerReservedConcurrency"}, "1"]}]
        }


class TestFunctions:
    def test_the_dispatcher_runs_hourly(self, template):
        events = template["Resources"]["SyncDispatchFunction"]["Properties"]["Events"]

        assert [(e["Type"], e["Properties"]["Schedule"]) for e in events.values()] == [
            ("Schedule", "rate(1 hour)")
        ]

    def test_every_declared_function_has_its_handler(self, template):
        for name, function in resources_of_type(template, "AWS::Serverless::Function").items():
            properties = function["Properties"]
            module, _, handler = properties["Handler"].partition(".")
            source = ROOT / properties["CodeUri"] / f"{module}.py"
            assert source.is_file(), name
            assert f"def {handler}(" in source.read_text(encoding="utf-8"), name

    def test_every_function_is_known_to_these_tests(self, template):
        assert set(resources_of_type(template, "AWS::Serverless::Function")) == set(FUNCTION_SETTINGS)

    def test_globals_set_runtime_tracing_layer_and_powertools(self, template):
        function = template["Globals"]["Function"]

        assert function["Runtime"] == "python3.11"
        assert function["Architectures"] == ["arm64"]
        assert function["Tracing"] == "Active"
        assert function["Layers"] == [{"Ref": "SharedLayer"}]
        variables = function["Environment"]["Variables"]
        assert variables["POWERTOOLS_SERVICE_NAME"] == "xpm-sync"
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "XpmSync"
        assert "POWERTOOLS_LOG_LEVEL" in variables
        # The project uses no pydantic plugins; looking for them costs every cold start.
        assert variables["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
        # Traces keep timings, not answers: an API page of hundreds of KB would lose its whole
        # subsegment past X-Ray's 64 KB, and it holds client names (the operators' probe).
        assert variables["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"

    def test_the_layer_is_built_for_the_functions_architecture_and_ships_bytecode(self, template):
        layer = template["Resources"]["SharedLayer"]
        assert layer["Metadata"]["BuildMethod"] == "makefile"
        assert layer["Metadata"]["BuildArchitecture"] == "arm64"
        assert template["Globals"]["Function"]["Architectures"] == ["arm64"]
        # What `sam build` will run, without running it (it downloads the arm64 wheels).
        plan = subprocess.run(
            ["make", "-n", "-C", str(ROOT / layer["Properties"]["ContentUri"]), "build-SharedLayer"],
            # A PLATFORM in the environment (some CI systems set one) must not change the build.
            env={**os.environ, "ARTIFACTS_DIR": "/tmp/artifacts", "LAYER_WHEEL_PLATFORM": "x64"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "--platform manylinux2014_aarch64" in plan
        assert "-r requirements.txt -c constraints.txt" in plan
        assert '--target "/tmp/artifacts/python"' in plan
        assert 'cp -R xpm_sync "/tmp/artifacts/python/"' in plan
        assert "compileall" in plan
        assert "--invalidation-mode unchecked-hash" in plan

    @pytest.mark.parametrize("name", sorted(FUNCTION_SETTINGS))
    def test_each_function_gets_every_variable_its_settings_require(self, template, name):
        settings = FUNCTION_SETTINGS[name]
        required = {field.alias for field in settings.model_fields.values() if field.is_required()}

        assert required <= set(function_environment(template, name))

    def test_xero_url_defaults_are_the_real_xero_hosts(self, template):
        parameters = template["Parameters"]
        defaults = {field.alias: field.default for field in WorkerSettings.model_fields.values()}

        assert parameters["XeroLoginUrl"]["Default"] == defaults["XERO_LOGIN_URL"] == "https://login.xero.com"
        assert parameters["XeroIdentityUrl"]["Default"] == defaults["XERO_IDENTITY_URL"]
        assert parameters["XeroApiUrl"]["Default"] == defaults["XERO_API_URL"]

    @pytest.mark.parametrize("name", sorted(FUNCTION_RESOURCES))
    def test_policies_reach_only_the_functions_own_tables_and_queue(self, template, name):
        resources = template["Resources"]
        policies = resources[name]["Properties"]["Policies"]

        assert referenced_resources(policies, resources) == FUNCTION_RESOURCES[name]
        # And those are exactly the resources its environment tells it about (the OAuth callback's
        # redirect URI names the REST API, which is an address, not something it can reach).
        env_refs = referenced_resources(function_environment(template, name), resources) - {"XpmApi"}
        assert env_refs == FUNCTION_RESOURCES[name]

    def test_the_dispatcher_reads_config_and_token_secrets_and_writes_only_to_the_queue(self, template):
        policies = template["Resources"]["SyncDispatchFunction"]["Properties"]["Policies"]

        assert [next(iter(policy)) for policy in policies] == [
            "DynamoDBReadPolicy",
            "SQSSendMessagePolicy",
            "Statement",
        ]
        [statement] = policies[2]["Statement"]
        assert statement["Action"] == "secretsmanager:GetSecretValue"

    def test_the_api_updates_in_the_active_table_only_an_offices_default_partner(self, template):
        # The newcomer's read of 2026-12-07: UpdateItem on the whole Active table let the API
        # rewrite any attribute of any client or user.
        policies = template["Resources"]["ApiFunction"]["Properties"]["Policies"]
        statements = [s for policy in policies for s in policy.get("Statement", [])]
        [statement] = [s for s in statements if s["Resource"] == {"Fn::GetAtt": ["ActiveTable", "Arn"]}]

        assert statement["Action"] == "dynamodb:UpdateItem"
        assert statement["Condition"] == {
            # The keys of the table and of its indexes (by_code, by_xpm_uuid), as AWS requires.
            "ForAllValues:StringEquals": {
                "dynamodb:Attributes": ["pk", "sk", "code", "xpm_uuid", "default_partner_user_id"]
            },
            "StringEqualsIfExists": {"dynamodb:ReturnValues": ["NONE", "UPDATED_NEW"]},
        }

    @pytest.mark.parametrize("name", sorted(FUNCTION_RESOURCES))
    def test_no_custom_statement_grants_every_resource_or_action(self, template, name):
        policies = template["Resources"][name]["Properties"]["Policies"]
        statements = [s for policy in policies for s in policy.get("Statement", [])]

        for statement in statements:
            assert statement["Resource"] != "*"
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all(not action.endswith("*") for action in actions)

    def test_the_worker_reaches_only_firm_token_secrets_and_the_app_secret(self, template):
        policies = template["Resources"]["SyncWorkerFunction"]["Properties"]["Policies"]
        statements = {s["Sid"]: s for policy in policies for s in policy.get("Statement", [])}

        tokens = statements["FirmTokens"]
        assert sorted(tokens["Action"]) == [
            "secretsmanager:GetSecretValue",
            "secretsmanager:PutSecretValue",
        ]
        assert tokens["Resource"]["Fn::Sub"][0].endswith(":secret:${Prefix}*")
        app = statements["XeroAppSecret"]
        assert app["Action"] == "secretsmanager:GetSecretValue"
        assert app["Resource"]["Fn::Sub"][0].endswith(":secret:${Name}-??????")
        assert statements["NotifyEmail"]["Action"] == "ses:SendEmail"

    def test_every_function_has_a_30_day_log_group(self, template):
        groups = resources_of_type(template, "AWS::Logs::LogGroup").values()
        named = {
            g["Properties"]["LogGroupName"]["Fn::Sub"]: g["Properties"]["RetentionInDays"] for g in groups
        }

        for name in resources_of_type(template, "AWS::Serverless::Function"):
            assert named.get(f"/aws/lambda/${{{name}}}") == 30


class TestLocalStack:
    def test_create_resources_builds_tables_with_exactly_the_templates_keys(self, template):
        with mock_aws():
            names = create_resources(prefix="t")
            client = boto3.client("dynamodb", region_name="ap-southeast-2")

            for logical_id in TABLES:
                table_name = getattr(names, _field(logical_id))
                description = client.describe_table(TableName=table_name)["Table"]
                properties = template["Resources"][logical_id]["Properties"]
                assert description["KeySchema"] == properties["KeySchema"]
                assert sorted(description["AttributeDefinitions"], key=str) == sorted(
                    properties["AttributeDefinitions"], key=str
                )
                ttl = client.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
                expected = properties.get("TimeToLiveSpecification")
                assert ttl.get("AttributeName") == (expected["AttributeName"] if expected else None)

    def test_create_resources_builds_the_queue_with_the_templates_attributes(self, template):
        with mock_aws():
            names = create_resources(prefix="t")
            sqs = boto3.client("sqs", region_name="ap-southeast-2")
            attributes = sqs.get_queue_attributes(QueueUrl=names.queue_url, AttributeNames=["All"])[
                "Attributes"
            ]
            dlq = sqs.get_queue_attributes(QueueUrl=names.dlq_url, AttributeNames=["All"])["Attributes"]

        queue = template["Resources"]["SyncQueue"]["Properties"]
        assert attributes["FifoQueue"] == "true"
        assert attributes["ContentBasedDeduplication"] == "true"
        assert attributes["VisibilityTimeout"] == str(queue["VisibilityTimeout"])
        assert dlq["QueueArn"] in attributes["RedrivePolicy"]
        assert dlq["MessageRetentionPeriod"] == "1209600"


def _field(logical_id: str) -> str:
    return {
        "ConfigTable": "config_table",
        "ActiveTable": "active_table",
        "SyncLogTable": "sync_log_table",
        "NotifyTable": "notify_table",
    }[logical_id]


class TestFixtures:
    def test_the_aws_fixture_points_the_function_environment_at_its_stack(self, aws):
        assert os.environ["ACTIVE_TABLE"] == aws.active_table
        assert os.environ["SYNC_QUEUE_URL"] == aws.queue_url
        assert os.environ["TOKEN_SECRET_PREFIX"] == aws.token_secret_prefix
        secret = boto3.client("secretsmanager").get_secret_value(SecretId=aws.app_secret_id)
        assert set(json.loads(secret["SecretString"])) == {"client_id", "client_secret"}

    def test_the_write_counter_sees_only_writes_to_the_active_table(self, aws, dynamodb_write_counter):
        active = boto3.resource("dynamodb").Table(aws.active_table)
        active.put_item(Item={"pk": "FIRM#a", "sk": "USER#1"})
        active.get_item(Key={"pk": "FIRM#a", "sk": "USER#1"})
        with active.batch_writer() as batch:
            batch.delete_item(Key={"pk": "FIRM#a", "sk": "USER#1"})
        boto3.client("dynamodb").put_item(TableName=aws.config_table, Item={"firm_id": {"S": "a"}})

        assert dict(dynamodb_write_counter.counts) == {"PutItem": 1, "BatchWriteItem": 1}
        dynamodb_write_counter.reset()
        assert dynamodb_write_counter.total == 0

    def test_aws_server_builds_a_separate_stack_per_test_over_http(self, aws_server, moto_server):
        assert os.environ["AWS_ENDPOINT_URL"] == moto_server.url
        tables = boto3.client("dynamodb").list_tables()["TableNames"]
        assert aws_server.active_table in tables


def test_the_workers_last_delivery_is_the_queues_max_receive_count() -> None:
    """``sync_queue.retry_delay`` sends a record to the dead-letter queue at once on its last
    delivery, and lets SQS bring the others back: it must know the count the queue's redrive uses."""
    redrive = load_template()["Resources"]["SyncQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == MAX_RECEIVES
    assert [retry_delay(count) for count in range(1, MAX_RECEIVES + 1)] == [
        FIRST_RETRY_AFTER_SECONDS,
        *[None] * (MAX_RECEIVES - 2),
        0,
    ]


def test_the_dead_letter_queue_outputs_name_its_url_and_arn() -> None:
    """docs/ARCHITECTURE.md's runbook reads and drains the dead-letter queue by the stack's outputs:
    `SyncDeadLetterQueueUrl` held the queue's name (the newcomer's walk-through of 2026-12-08)."""
    outputs = load_template()["Outputs"]

    assert outputs["SyncDeadLetterQueueUrl"]["Value"] == {"Ref": "SyncDeadLetterQueue"}
    assert outputs["SyncDeadLetterQueueArn"]["Value"] == {"Fn::GetAtt": ["SyncDeadLetterQueue", "Arn"]}
