"""Just enough of the Lambda runtime to run our handlers locally: a context and the SQS
event source mapping (receive, build the event AWS would send, delete what succeeded)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LocalContext:
    """The attributes Powertools and our handlers read from a Lambda context."""

    function_name: str
    timeout_seconds: float = 900.0
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.monotonic)

    # The rest of what AWS sets (Powertools' logger reads them): fixed, or from the function's name.
    function_version: str = field(default="$LATEST", init=False)
    log_stream_name: str = field(default="local", init=False)
    invoked_function_arn: str = field(init=False)
    log_group_name: str = field(init=False)

    def __post_init__(self) -> None:
        self.invoked_function_arn = (
            f"arn:aws:lambda:ap-southeast-2:123456789012:function:{self.function_name}"
        )
        self.log_group_name = f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


def scheduled_event(now: datetime | None = None) -> dict[str, Any]:
    """An EventBridge scheduled event, as AWS sends it to the dispatcher."""
    moment = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": moment,
        "region": "ap-southeast-2",
        "resources": ["arn:aws:events:ap-southeast-2:123456789012:rule/xpm-sync-hourly"],
        "detail": {},
    }


def _sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    attributes = message.get("Attributes", {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
            "SentTimestamp": attributes.get("SentTimestamp", str(int(time.time() * 1000))),
            "SenderId": attributes.get("SenderId", "AIDAEXAMPLE"),
            "ApproximateFirstReceiveTimestamp": attributes.get(
                "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))
            ),
            "SequenceNumber": attributes.get("SequenceNumber", "1"),
            "MessageGroupId": attributes.get("MessageGroupId", ""),
            "MessageDeduplicationId": attributes.get("MessageDeduplicationId", ""),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(message["Body"].encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "ap-southeast-2",
    }


@dataclass
class Delivery:
    """One worker invocation: the bodies it got and the ones it reported as failed."""

    bodies: list[dict[str, Any]]
    failed: list[dict[str, Any]]


def drain_queue(
    sqs: Any,
    queue_url: str,
    handler: Handler,
    *,
    function_name: str = "SyncWorkerFunction",
    timeout_seconds: float = 900.0,
    max_batches: int = 100,
    batch_size: int = 10,
) -> list[Delivery]:
    """Deliver the queue's messages to the handler the way Lambda's SQS event source does.

    Records the handler reports in ``batchItemFailures`` stay on the queue (visible again after
    the visibility timeout, so SQS retries them and, past maxReceiveCount, moves them to the DLQ);
    the others are deleted.
    """
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    deliveries: list[Delivery] = []
    for _ in range(max_batches):
        answer = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=batch_size,
            AttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        messages = answer.get("Messages", [])
        if not messages:
            break
        event = {"Records": [_sqs_record(message, queue_arn) for message in messages]}
        try:
            response = handler(event, LocalContext(function_name, timeout_seconds=timeout_seconds)) or {}
            failed_ids = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        except Exception:
            failed_ids = {message["MessageId"] for message in messages}
        for message in messages:
            if message["MessageId"] not in failed_ids:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        deliveries.append(
            Delivery(
                bodies=[json.loads(m["Body"]) for m in messages],
                failed=[json.loads(m["Body"]) for m in messages if m["MessageId"] in failed_ids],
            )
        )
    return deliveries
