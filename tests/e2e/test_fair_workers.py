"""Issue 19, fair workers: the worker's event source takes one message per invocation
(template.yaml, tests/unit/test_template.py), and the handler keeps the partial-batch contract of
SPEC B1 whatever the batch: an event of several records, as a larger BatchSize would deliver, still
reports exactly the records that must be delivered again."""

from __future__ import annotations

import json
from typing import Any

from functions.sync_worker.app import lambda_handler as worker_handler
from tests.fixtures.sync import SyncWorld


def record(message_id: str, group: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"r-{message_id}",
        "body": json.dumps(body),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1700000000000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1700000000000",
            "MessageGroupId": group,
            "MessageDeduplicationId": f"d-{message_id}",
            "SequenceNumber": message_id,
        },
        "messageAttributes": {},
        "md5OfBody": "0",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:ap-southeast-2:123456789012:sync.fifo",
        "awsRegion": "ap-southeast-2",
    }


def test_a_batch_of_several_firms_reports_failures_per_record(world: SyncWorld) -> None:
    # Given XPM down for the world's firm, and an event with its run, another firm's keep-alive
    # (a firm with no config: nothing to do) and a second message of the first firm's group
    world.sim.faults.add("unavailable", times=None)
    event = {
        "Records": [
            record("1", world.firm_id, {"firm_id": world.firm_id, "trigger": "schedule"}),
            record("2", "firm-other", {"firm_id": "firm-other", "trigger": "schedule", "keep_alive": True}),
            record("3", world.firm_id, {"firm_id": world.firm_id, "trigger": "manual"}),
        ]
    }

    # When one invocation gets all three
    answer = worker_handler(event, None)

    # Then the failed run's record is reported, and so is the later message of the same firm (FIFO:
    # it must not overtake the one SQS delivers again); the other firm's record succeeded
    assert answer == {"batchItemFailures": [{"itemIdentifier": "1"}, {"itemIdentifier": "3"}]}
    assert [run.status for run in world.runs()] == ["failed"]
