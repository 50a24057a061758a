"""Issue 19, fair workers: the worker's event source takes one message per invocation
(template.yaml, tests/unit/test_template.py), and the handler keeps the partial-batch contract of
SPEC B1 whatever the batch: an event of several records, as a larger BatchSize would deliver, still
reports exactly the records that must be delivered again."""

from __future__ import annotations

from functions.sync_worker.app import lambda_handler as worker_handler
from tests.fixtures.events import sqs_record
from tests.fixtures.sync import SyncWorld


def test_a_batch_of_several_firms_reports_failures_per_record(world: SyncWorld) -> None:
    # Given XPM down for the world's firm, and an event with its run, another firm's keep-alive
    # (a firm with no config: nothing to do) and a second message of the first firm's group
    world.sim.faults.add("unavailable", times=None)
    event = {
        "Records": [
            sqs_record("1", world.firm_id, {"firm_id": world.firm_id, "trigger": "schedule"}),
            sqs_record(
                "2", "firm-other", {"firm_id": "firm-other", "trigger": "schedule", "keep_alive": True}
            ),
            sqs_record("3", world.firm_id, {"firm_id": world.firm_id, "trigger": "manual"}),
        ]
    }

    # When one invocation gets all three
    answer = worker_handler(event, None)

    # Then the failed run's record is reported, and so is the later message of the same firm (FIFO:
    # it must not overtake the one SQS delivers again); the other firm's record succeeded
    assert answer == {"batchItemFailures": [{"itemIdentifier": "1"}, {"itemIdentifier": "3"}]}
    assert [run.status for run in world.runs()] == ["failed"]
