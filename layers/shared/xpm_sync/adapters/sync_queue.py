"""The sync queue (SPEC B2): SQS FIFO, one message group per firm so a firm never syncs twice at once."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from xpm_sync.adapters.dynamodb import error_code
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


def receive_count(record: Any) -> int | None:
    """Which delivery of its message an SQS event's record is; None when the event does not say."""
    attributes = record.get("attributes") if isinstance(record, dict) else None
    received = str((attributes or {}).get("ApproximateReceiveCount", ""))
    return int(received) if received.isascii() and received.isdigit() else None


def delivered_again_on_failure(record: Any) -> bool:
    """Whether SQS delivers this record again if the worker fails it (not its last delivery). A
    record that does not say which delivery it is (Lambda's always do) is taken as its last: what
    waits on it (Start Sync's gate) is not held for a delivery that may never come."""
    received = receive_count(record)
    return received is not None and received < MAX_RECEIVES


@dataclass(frozen=True)
class Sent:
    """What a send of many messages did: how many SQS took, and the firms whose message it refused."""

    count: int
    refused: list[str]


# What SQS answers for the content of a request (a message it cannot take), which sending the
# messages one at a time isolates; any other failure (the queue gone, KMS, a throttle, SQS down)
# would fail each of them alike.
_CONTENT_REFUSALS = ("InvalidParameterValue", "InvalidMessageContents", "BatchRequestTooLong")


def _content_refusal(error: Exception) -> str | None:
    """The error code when SQS refused a request for a message in it; None for anything else."""
    if not isinstance(error, ClientError):
        return None
    code = error_code(error)
    return code if code.endswith(_CONTENT_REFUSALS) else None


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _errand_message(firm_id: str, errand: str, value: object, **more: object) -> dict[str, str]:
    """A message that runs nothing, with its own deduplication id (see ``_enqueue_errands``)."""
    body = json.dumps({"firm_id": firm_id, "trigger": "schedule", errand: value, **more}, sort_keys=True)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return {
        "MessageBody": body,
        "MessageGroupId": firm_id,
        "MessageDeduplicationId": f"{errand.replace('_', '-')}.{digest}",
    }


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

    def pace_failed(
        self, records: Iterable[Any], failed_ids: Collection[str], *, never_runs: Collection[str] = ()
    ) -> None:
        """The records of an SQS event the worker failed (``failed_ids``, their message ids) come
        back at ``retry_delay``'s pace; a record whose timeout cannot be changed keeps the queue's.
        Those of ``never_runs`` (a body the worker cannot read) come back at once, so they reach
        the dead-letter queue in moments instead of holding their message group for hours."""
        for record in records:
            if not isinstance(record, dict) or record.get("messageId") not in failed_ids:
                continue
            if record.get("messageId") in never_runs:
                seconds: int | None = 0
            else:
                seconds = retry_delay(receive_count(record) or 1)  # unsaid: paced as a first delivery
            if seconds is None:
                continue
            try:
                self.deliver_again_in(str(record.get("receiptHandle")), seconds)
            except Exception as error:  # the queue's own timeout still brings it back
                logger.warning(
                    "a failed record keeps the queue's visibility timeout",
                    extra={"message_id": record.get("messageId"), "error": type(error).__name__},
                )

    def enqueue_many(self, firm_ids: Iterable[str], trigger: Trigger, *, workers: int = 8) -> Sent:
        """Queue one message per firm, ten per request, several requests at once."""

        def message(firm_id: str) -> dict[str, str]:
            return {"MessageBody": self._body(firm_id, trigger), "MessageGroupId": firm_id}

        return self._send_all(map(message, firm_ids), workers)

    def enqueue_keep_alives(self, firm_ids: Iterable[str], *, workers: int = 8) -> Sent:
        """Queue one keep-alive per firm (SPEC A6): refresh its tokens, run nothing."""
        return self._enqueue_errands(firm_ids, "keep_alive", workers)

    def enqueue_notices(self, firm_ids: Iterable[str], *, workers: int = 8) -> Sent:
        """Queue one notice per firm (SPEC A8): email the admin that the connection was lost, if the
        run that lost it could not, and run nothing."""
        return self._enqueue_errands(firm_ids, "notice", workers)

    def enqueue_lost_connection(self, firm_id: str, grant_id: str | None) -> None:
        """Queue the record of a grant the API found refused (SPEC A8): a run's entry and the
        admin's email, from the worker, and nothing run."""
        message = _errand_message(firm_id, "lost_connection", True, grant_id=grant_id)
        self._sqs.send_message(QueueUrl=self._url, **message)

    def _enqueue_errands(self, firm_ids: Iterable[str], errand: str, workers: int) -> Sent:
        """Messages that run nothing, each with its own deduplication id: the errand's name and its
        body's SHA-256. The same errand sent twice within 5 minutes (a dispatch invoked again) is
        still dropped once, and no run's message can ever have that id (content-based ids are the
        bare SHA-256 of a body; the ids a run names itself start with its run id), so an errand
        never drops a run's message, nor a run's message an errand."""
        return self._send_all((_errand_message(firm_id, errand, True) for firm_id in firm_ids), workers)

    def _send_all(self, messages: Iterable[dict[str, str]], workers: int) -> Sent:
        """Send messages ten per request, several requests at once; one resend of what SQS refused.
        A request SQS refuses whole for its content is sent again a message at a time, so that one
        message it can never take (a firm id too long for a message group, say) costs no other firm
        its message; what is still refused is reported, never raised midway. A request that fails
        otherwise (SQS throttling or down, after botocore's retries) is not split: that would only
        multiply the requests failing."""

        def send(batch: list[dict[str, str]]) -> Sent:
            entries = [{"Id": str(i), **message} for i, message in enumerate(batch)]
            try:
                refused = self._send_batch(entries)
            except Exception as error:
                content_refused = _content_refusal(error)
                logger.warning(
                    "SQS refused a batch of sync messages"
                    + ("; sending them one at a time" if content_refused else ""),
                    extra={"error": type(error).__name__, "code": content_refused},
                )
                if content_refused:
                    refused = [message for entry in entries for message in self._send_alone(entry)]
                else:
                    refused = entries
            return Sent(len(batch) - len(refused), [message["MessageGroupId"] for message in refused])

        count, refused = 0, []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for sent in pool.map(send, _batches(messages, _BATCH)):
                count += sent.count
                refused += sent.refused
        return Sent(count, refused)

    def _send_batch(self, entries: list[dict[str, str]]) -> list[dict[str, str]]:
        """The entries SQS still refuses after one resend."""
        failed = self._refused(entries)
        if not failed:
            return []
        retry = [entry for entry in entries if entry["Id"] in failed]
        still_failed = self._refused(retry)
        return [entry for entry in retry if entry["Id"] in still_failed]

    def _refused(self, entries: list[dict[str, str]]) -> set[str]:
        answer = self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)
        return {str(failure["Id"]) for failure in answer.get("Failed", [])}

    def _send_alone(self, entry: dict[str, str]) -> list[dict[str, str]]:
        try:
            return self._send_batch([{**entry, "Id": "0"}])
        except Exception:
            return [entry]
