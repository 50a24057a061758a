"""One sync run per SQS record (SPEC B1), with partial batch failures reported per record.

Metrics are flushed once per run by the domain (each run is its own EMF document, with its firm
and run ids as metadata), so the handler has no metrics decorator of its own.

A run that failed for a transient reason (XPM unavailable, an unexpected error) fails its record,
so SQS delivers it again and, after the queue's maxReceiveCount, parks it in the DLQ.
"""

from __future__ import annotations

from xpm_sync.coldstart import loading

# The GC is paused while the handler's modules load: xpm_sync.coldstart.
with loading():
    import json
    from collections.abc import Callable
    from typing import Any

    from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from xpm_sync.adapters.metrics import record_run_crashed
    from xpm_sync.adapters.sync_queue import delivered_again_on_failure
    from xpm_sync.composition import sync_queue
    from xpm_sync.composition.worker import keep_alive, sync_services
    from xpm_sync.domain.runs import SyncRequest
    from xpm_sync.observability import logger, tracer
    from xpm_sync.runtime import remaining_seconds, usable_context
    from xpm_sync.settings import WorkerSettings, load_settings
    from xpm_sync.sync.engine import (
        SyncServices,
        record_connection_found_lost,
        run_sync,
        tell_lost_connection,
    )


class TransientRunFailure(Exception):
    """The run failed in a way a later delivery may not: let SQS retry the record."""


def _handler_for(context: LambdaContext, unreadable: set[str]) -> Any:
    """The handler of one record; the ids of records that can never run are added to ``unreadable``."""
    settings = load_settings(WorkerSettings)
    services = sync_services(settings, remaining_seconds=remaining_seconds(context))
    refresh_idle_connection = keep_alive(settings, services)

    def handle(record: SQSRecord) -> str | None:
        try:
            request = _request_of(record)
        except ValueError:
            unreadable.add(record.message_id)
            raise
        if request.keep_alive:
            return _kept_alive(refresh_idle_connection, request.firm_id)
        if request.notice:
            return tell_lost_connection(request.firm_id, services)
        if request.lost_connection:
            recorded = record_connection_found_lost(request.firm_id, services, grant_id=request.grant_id)
            return recorded.run.status if recorded is not None else None
        return _ran(request, services, delivered_again=delivered_again_on_failure(record.raw_event))

    return handle


def _ran(request: SyncRequest, services: SyncServices, *, delivered_again: bool) -> str | None:
    """One run (or its next part, or a preview); a run that failed for a reason that may pass is
    raised, so SQS delivers the record again (``delivered_again``: unless it was its last delivery)."""
    try:
        result = run_sync(
            request.firm_id,
            request.trigger,
            services,
            resume_run_id=request.resume_run_id,
            dry_run_id=request.run_id if request.dry_run else None,
            delivered_again_on_failure=delivered_again,
        )
    except Exception:
        # The run stopped without recording how it ended (a run it started stays running until the
        # firm's next run closes it): the operator's one trace of why. SQS delivers the record again.
        logger.exception("sync run stopped without recording its end", extra={"firm_id": request.firm_id})
        record_run_crashed(request.firm_id, request.trigger)
        raise
    if result is None:
        return None
    if result.transient:
        raise TransientRunFailure(f"run {result.run.run_id} failed; SQS will retry it")
    return result.run.status


def _kept_alive(refresh_idle_connection: Callable[[str], str], firm_id: str) -> str:
    """An idle connection's tokens refreshed, and nothing run (SPEC A6). A failure that may pass is
    raised, so SQS delivers the record again; the operator's one trace of it is logged here."""
    try:
        return refresh_idle_connection(firm_id)
    except Exception:
        logger.exception("keep-alive refresh failed", extra={"firm_id": firm_id})
        raise


def _request_of(record: SQSRecord) -> SyncRequest:
    try:
        return SyncRequest.model_validate_json(record.body)
    except ValueError as error:
        # It can never run: the operator's one trace of why it went back to SQS (and, after its
        # last delivery, to the dead-letter queue).
        logger.error(
            "sync message that cannot be read",
            extra={"message_id": record.message_id, "error": type(error).__name__},
        )
        raise


def _firm_of(body: object) -> str | None:
    try:
        request = json.loads(body) if isinstance(body, str) else None
    except (ValueError, RecursionError):  # nested too deep for the reader: it names no firm
        return None
    firm_id = request.get("firm_id") if isinstance(request, dict) else None
    return firm_id if isinstance(firm_id, str) and firm_id else None


def _grouped_by_firm(records: list[Any]) -> list[Any]:
    """Each record in the message group of the firm its body names (as the queue's senders set it),
    or alone when it names none: a record that can never run holds up no other firm's run, whatever
    group the event says it came in."""
    grouped = []
    for record in records:
        if not isinstance(record, dict):
            grouped.append(record)
            continue
        group = _firm_of(record.get("body")) or f"unreadable:{record.get('messageId')}"
        attributes = {**(record.get("attributes") or {}), "MessageGroupId": group}
        grouped.append({**record, "attributes": attributes})
    return grouped


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def _handle(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    records = event.get("Records") if isinstance(event, dict) else None
    if not records:
        # Lambda never sends an empty batch; a caller that does gets the empty answer, not an error.
        return {"batchItemFailures": []}
    event = {**event, "Records": _grouped_by_firm(records)}
    # skip_group_on_error: a failed firm's later messages wait; other firms carry on.
    processor = SqsFifoPartialProcessor(skip_group_on_error=True)
    # Failed records are reported as such even when every record failed (SPEC B1), rather than
    # raised as one error for the invocation: SQS keeps exactly the same records either way.
    processor.raise_on_entire_batch_failure = False
    unreadable: set[str] = set()
    answer = process_partial_response(
        event=event, record_handler=_handler_for(context, unreadable), processor=processor, context=context
    )
    if answer["batchItemFailures"]:
        # A failed record comes back in minutes the first time and goes to the DLQ at once the last
        # time, instead of holding the firm's message group (Start Sync's run included) for the
        # queue's 90-minute visibility timeout; one that can never run goes there without waiting.
        failed = {str(item["itemIdentifier"]) for item in answer["batchItemFailures"]}
        queue = sync_queue(load_settings(WorkerSettings).sync_queue_url)
        queue.pace_failed(event["Records"], failed, never_runs=unreadable)
    return answer


def lambda_handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    answer: PartialItemFailureResponse = _handle(event, usable_context(context))
    return answer
