"""The sync queue (SPEC B2): SQS FIFO, one message group per firm so a firm never syncs twice at once."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any

from xpm_sync.domain.runs import Trigger

_BATCH = 10  # SQS's maximum per SendMessageBatch


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class SyncQueue:
    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    @staticmethod
    def _body(firm_id: str, trigger: Trigger) -> str:
        return json.dumps({"firm_id": firm_id, "trigger": trigger}, sort_keys=True)

    def enqueue(self, firm_id: str, trigger: Trigger) -> None:
        # Content-based deduplication drops an identical message within 5 minutes: a double
        # click or a repeated schedule delivery queues one run, not two.
        self._sqs.send_message(
            QueueUrl=self._url, MessageBody=self._body(firm_id, trigger), MessageGroupId=firm_id
        )

    def enqueue_continuation(self, firm_id: str, trigger: Trigger, run_id: str, *, processed: int) -> None:
        """Queue the next part of a run. Every part's body is the same, so each part names its own
        deduplication id: with the body's, SQS would drop a third part sent within 5 minutes of the
        second, and the run would never end."""
        body = json.dumps({"firm_id": firm_id, "trigger": trigger, "resume_run_id": run_id}, sort_keys=True)
        self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=body,
            MessageGroupId=firm_id,
            MessageDeduplicationId=f"{run_id}.{processed}",
        )

    def enqueue_many(self, firm_ids: Iterable[str], trigger: Trigger, *, workers: int = 8) -> int:
        """Queue one message per firm, ten per request, several requests at once. Returns the count."""

        def send(batch: list[str]) -> int:
            entries = [
                {"Id": str(i), "MessageBody": self._body(firm_id, trigger), "MessageGroupId": firm_id}
                for i, firm_id in enumerate(batch)
            ]
            answer = self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)
            failed = answer.get("Failed", [])
            if failed:
                retry = [entries[int(f["Id"])] for f in failed]
                answer = self._sqs.send_message_batch(QueueUrl=self._url, Entries=retry)
                if answer.get("Failed"):
                    raise RuntimeError(f"SQS refused {len(answer['Failed'])} sync messages")
            return len(batch)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return sum(pool.map(send, _batches(firm_ids, _BATCH)))
