"""The sync queue (SPEC B2): SQS FIFO, one message group per firm so a firm never syncs twice at once."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any, TypeVar

from xpm_sync.domain.runs import Trigger
from xpm_sync.observability import logger

_BATCH = 10  # SQS's maximum per SendMessageBatch
T = TypeVar("T")

# template.yaml's maxReceiveCount: a record that failed this many deliveries goes to the DLQ.
MAX_RECEIVES = 3
# A record that failed its first delivery comes back after this long, not after the queue's
# visibility timeout (90 minutes, six times the worker's timeout, as Lambda's SQS event source
# wants), which would hold the firm's message group, Start Sync's run and the next hourly run
# included, for an hour and a half after a passing XPM blip. Only the first: a failure that
# persists keeps the queue's pace, so that SPEC A5's "third such run in a row" and the operators'
# alarms still mean hours, not minutes.
FIRST_RETRY_AFTER_SECONDS = 300


def retry_delay(receive_count: int) -> int | None:
    """Seconds until a record that failed on its ``receive_count``-th delivery is delivered again;
    None for the queue's own timeout. The last delivery's record goes to the dead-letter queue at
    once (0): hidden for nothing, it would still hold the firm's message group."""
    if receive_count >= MAX_RECEIVES:
        return 0
    return FIRST_RETRY_AFTER_SECONDS if receive_count <= 1 else None


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
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
        # Content-based deduplication drops an identical message within 5 minutes: a repeated
        # schedule delivery queues one run, not two.
        self._sqs.send_message(
            QueueUrl=self._url, MessageBody=self._body(firm_id, trigger), MessageGroupId=firm_id
        )

    def enqueue_manual(self, firm_id: str) -> None:
        """Queue the run of one Start Sync the config's claim let through (a double click never
        gets here). Each names its own deduplication id: the claim's 5-minute cooldown, kept to the
        second, can reopen a moment before SQS's 5-minute window closes, and with the body's id
        SQS would drop the message while the firm waits, run pending, for a run never queued.
        A retry of this one send keeps its id, so it is still dropped once."""
        self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=self._body(firm_id, "manual"),
            MessageGroupId=firm_id,
            MessageDeduplicationId=f"manual.{secrets.token_hex(16)}",
        )

    def enqueue_continuation(self, firm_id: str, trigger: Trigger, run_id: str) -> None:
        """Queue the next part of a run. Every part's body is the same, so each part names its own
        deduplication id: with the body's, SQS would drop a third part sent within 5 minutes of the
        second, and the run would never end."""
        body = json.dumps({"firm_id": firm_id, "trigger": trigger, "resume_run_id": run_id}, sort_keys=True)
        self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=body,
            MessageGroupId=firm_id,
            MessageDeduplicationId=f"{run_id}.{secrets.token_hex(8)}",
        )

    def enqueue_preview(self, firm_id: str, run_id: str) -> None:
        """Queue a preview (SPEC B6) whose run the API already made: one message per preview."""
        body = json.dumps(
            {"firm_id": firm_id, "trigger": "manual", "dry_run": True, "run_id": run_id}, sort_keys=True
        )
        self._sqs.send_message(
            QueueUrl=self._url, MessageBody=body, MessageGroupId=firm_id, MessageDeduplicationId=run_id
        )

    def deliver_again_in(self, receipt_handle: str, seconds: int) -> None:
        """A record the worker failed is delivered again in ``seconds``, not the queue's timeout."""
        self._sqs.change_message_visibility(
            QueueUrl=self._url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )

    def pace_failed(self, records: Iterable[Any], failed_ids: Collection[str]) -> None:
        """The records of an SQS event the worker failed (``failed_ids``, their message ids) come
        back at ``retry_delay``'s pace; a record whose timeout cannot be changed keeps the queue's."""
        for record in records:
            if not isinstance(record, dict) or record.get("messageId") not in failed_ids:
                continue
            received = str((record.get("attributes") or {}).get("ApproximateReceiveCount", "1"))
            seconds = retry_delay(int(received) if received.isascii() and received.isdigit() else 1)
            if seconds is None:
                continue
            try:
                self.deliver_again_in(str(record.get("receiptHandle")), seconds)
            except Exception as error:  # the queue's own timeout still brings it back
                logger.warning(
                    "a failed record keeps the queue's visibility timeout",
                    extra={"message_id": record.get("messageId"), "error": type(error).__name__},
                )

    def enqueue_many(self, firm_ids: Iterable[str], trigger: Trigger, *, workers: int = 8) -> int:
        """Queue one message per firm, ten per request, several requests at once. Returns the count."""

        def message(firm_id: str) -> dict[str, str]:
            return {"MessageBody": self._body(firm_id, trigger), "MessageGroupId": firm_id}

        return self._send_all(map(message, firm_ids), workers)

    def enqueue_keep_alives(self, firm_ids: Iterable[str], *, workers: int = 8) -> int:
        """Queue one keep-alive per firm (SPEC A6): refresh its tokens, run nothing. Returns the count.

        Each names its own deduplication id, ``keep-alive.`` and its body's SHA-256: the same
        keep-alive sent twice within 5 minutes (a dispatch invoked again) is still dropped once, and
        no run's message can ever have that id (content-based ids are the bare SHA-256 of a body;
        the ids a run names itself start with its run id), so a keep-alive never drops a run's
        message, nor a run's message a keep-alive.
        """

        def message(firm_id: str) -> dict[str, str]:
            body = json.dumps({"firm_id": firm_id, "trigger": "schedule", "keep_alive": True}, sort_keys=True)
            digest = hashlib.sha256(body.encode()).hexdigest()
            return {
                "MessageBody": body,
                "MessageGroupId": firm_id,
                "MessageDeduplicationId": f"keep-alive.{digest}",
            }

        return self._send_all(map(message, firm_ids), workers)

    def _send_all(self, messages: Iterable[dict[str, str]], workers: int) -> int:
        """Send messages ten per request, several requests at once; one resend of what SQS refused."""

        def send(batch: list[dict[str, str]]) -> int:
            entries = [{"Id": str(i), **message} for i, message in enumerate(batch)]
            answer = self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)
            failed = answer.get("Failed", [])
            if failed:
                retry = [entries[int(f["Id"])] for f in failed]
                answer = self._sqs.send_message_batch(QueueUrl=self._url, Entries=retry)
                if answer.get("Failed"):
                    raise RuntimeError(f"SQS refused {len(answer['Failed'])} sync messages")
            return len(batch)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return sum(pool.map(send, _batches(messages, _BATCH)))
