"""The embedded local AWS: the resources of template.yaml, created through boto3.

Tables and queues are built from the template's own definitions, so local runs and tests exercise
the key schemas and queue attributes that deploy, not a copy that can drift. Everything goes
through boto3, so the same code works inside moto's ``mock_aws()`` and against a moto server
(``endpoint_url``, or boto3's own ``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
import yaml
from moto.server import ThreadedMotoServer

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"

# Logical id in template.yaml -> suffix of the local resource name.
TABLES: dict[str, str] = {
    "ConfigTable": "config",
    "ActiveTable": "active",
    "SyncLogTable": "sync-log",
    "NotifyTable": "notify",
}
SYNC_QUEUE = "SyncQueue"
DEAD_LETTER_QUEUE = "SyncDeadLetterQueue"

# CloudFormation queue properties that are SQS queue attributes of the same name.
_QUEUE_ATTRIBUTES = (
    "FifoQueue",
    "ContentBasedDeduplication",
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "MaximumMessageSize",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "SqsManagedSseEnabled",
)


class _TemplateLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships without type hints
    """SafeLoader that reads CloudFormation short tags as their long ``Fn::`` form."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{tag_suffix}": value}


_TemplateLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """template.yaml as plain data, short tags (``!Ref X``) turned into ``{"Ref": "X"}`` etc.

    Parsed once per file content (half a second of YAML, which every test's stack paid); each
    caller gets its own copy to read or change."""
    return copy.deepcopy(_parsed_template(path, path.read_bytes()))


@functools.lru_cache(maxsize=4)
def _parsed_template(path: Path, content: bytes) -> dict[str, Any]:
    template = yaml.load(content.decode("utf-8"), Loader=_TemplateLoader)  # noqa: S506  # a SafeLoader subclass
    assert isinstance(template, dict)
    return template


@dataclass(frozen=True)
class StackNames:
    """Physical names of the local resources, what the functions receive as SPEC B2 variables."""

    config_table: str
    active_table: str
    sync_log_table: str
    notify_table: str
    queue_url: str
    dlq_url: str
    app_secret_id: str
    token_secret_prefix: str


def _properties(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    properties = template["Resources"][logical_id]["Properties"]
    assert isinstance(properties, dict)
    return properties


def _create_table(client: Any, name: str, properties: dict[str, Any]) -> None:
    definition: dict[str, Any] = {
        "TableName": name,
        "KeySchema": properties["KeySchema"],
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "BillingMode": properties["BillingMode"],
    }
    if "GlobalSecondaryIndexes" in properties:
        definition["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
    client.create_table(**definition)
    client.get_waiter("table_exists").wait(TableName=name)
    ttl = properties.get("TimeToLiveSpecification")
    if ttl is not None:
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": bool(ttl["Enabled"])},
        )


def _queue_attributes(properties: dict[str, Any], arns: dict[str, str]) -> dict[str, str]:
    attributes = {
        key: str(properties[key]).lower() if isinstance(properties[key], bool) else str(properties[key])
        for key in _QUEUE_ATTRIBUTES
        if key in properties
    }
    redrive = properties.get("RedrivePolicy")
    if redrive is not None:
        target = redrive["deadLetterTargetArn"]
        # The template names the DLQ as !GetAtt <LogicalId>.Arn: resolve it to the local queue.
        logical_id, attribute = target["Fn::GetAtt"]
        assert attribute == "Arn"
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": arns[logical_id], "maxReceiveCount": int(redrive["maxReceiveCount"])}
        )
    return attributes


@functools.cache
def _client(region: str, service: str, endpoint_url: str | None) -> Any:
    """One client per service and endpoint (clients hold no AWS state; making one costs more than
    the calls it is made for, and a test suite creates a stack for every test), from one session
    per region, which caches the service models that every new client would reload."""
    return _session(region).client(service, endpoint_url=endpoint_url)


@functools.cache
def _session(region: str) -> boto3.session.Session:
    return boto3.session.Session(region_name=region)


def create_resources(
    *,
    endpoint_url: str | None = None,
    prefix: str = "xpm-sync-local",
    region: str = "ap-southeast-2",
    app_client_id: str = "local-client-id",
    app_client_secret: str = "local-client-secret",  # noqa: S107  # the local fake app, not a secret
    from_email: str = "sync@active.example",
    template_path: Path = TEMPLATE_PATH,
) -> StackNames:
    """Create the template's tables, queues, the Xero app secret and the SES sender."""
    template = load_template(template_path)

    dynamodb = _client(region, "dynamodb", endpoint_url)
    table_names = {logical_id: f"{prefix}-{suffix}" for logical_id, suffix in TABLES.items()}
    for logical_id, name in table_names.items():
        _create_table(dynamodb, name, _properties(template, logical_id))

    sqs = _client(region, "sqs", endpoint_url)
    arns: dict[str, str] = {}
    urls: dict[str, str] = {}
    # The dead-letter queue first: the main queue's redrive policy needs its ARN.
    for logical_id, suffix in ((DEAD_LETTER_QUEUE, "sync-dlq"), (SYNC_QUEUE, "sync")):
        properties = _properties(template, logical_id)
        name = f"{prefix}-{suffix}.fifo" if properties.get("FifoQueue") else f"{prefix}-{suffix}"
        url = sqs.create_queue(QueueName=name, Attributes=_queue_attributes(properties, arns))["QueueUrl"]
        urls[logical_id] = url
        arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    app_secret_id = f"{prefix}/xero-app"
    _client(region, "secretsmanager", endpoint_url).create_secret(
        Name=app_secret_id,
        SecretString=json.dumps({"client_id": app_client_id, "client_secret": app_client_secret}),
    )
    _client(region, "ses", endpoint_url).verify_email_identity(EmailAddress=from_email)

    return StackNames(
        config_table=table_names["ConfigTable"],
        active_table=table_names["ActiveTable"],
        sync_log_table=table_names["SyncLogTable"],
        notify_table=table_names["NotifyTable"],
        queue_url=urls[SYNC_QUEUE],
        dlq_url=urls[DEAD_LETTER_QUEUE],
        app_secret_id=app_secret_id,
        token_secret_prefix=f"{prefix}/firm/",
    )


def function_environment(
    names: StackNames,
    *,
    xero_url: str,
    frontend_url: str = "http://127.0.0.1:5173",
    redirect_uri: str | None = None,
    from_email: str = "sync@active.example",
) -> dict[str, str]:
    """The SPEC B2 variables of every function, pointed at the local stack. Xero redirects the
    browser to the Active setup page (SPEC A6), so the redirect URI is the frontend's unless given."""
    if redirect_uri is None:
        redirect_uri = oauth_redirect_uri(frontend_url)
    return {
        "CONFIG_TABLE": names.config_table,
        "ACTIVE_TABLE": names.active_table,
        "SYNC_LOG_TABLE": names.sync_log_table,
        "NOTIFY_TABLE": names.notify_table,
        "SYNC_QUEUE_URL": names.queue_url,
        "APP_SECRET_ID": names.app_secret_id,
        "TOKEN_SECRET_PREFIX": names.token_secret_prefix,
        "OAUTH_REDIRECT_URI": redirect_uri,
        "FRONTEND_URL": frontend_url,
        "NOTIFY_FROM_EMAIL": from_email,
        # One simulator serves Xero's login, identity and API hosts.
        "XERO_LOGIN_URL": xero_url,
        "XERO_IDENTITY_URL": xero_url,
        "XERO_API_URL": xero_url,
    }


def oauth_redirect_uri(frontend_url: str) -> str:
    """OAUTH_REDIRECT_URI as template.yaml builds it: the Active setup page's callback (SPEC A6)."""
    return f"{frontend_url.rstrip('/')}/admin/integrations/xpm/callback"


class MotoServer:
    """moto's threaded server on loopback; port 0 lets the OS pick a free port without a race."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("MotoServer is not started")
        return self._url

    def start(self) -> None:
        # werkzeug logs every request moto serves; the local stack's output is ours to keep readable.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self._url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()
        self._url = None

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
