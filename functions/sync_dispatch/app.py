"""Hourly: one scan of the Config table, then one sync message per firm whose sync is enabled
(SPEC B1), one keep-alive per idle connection (SPEC A6), one notice per lost connection whose
email could not go yet (SPEC A8), and the count of firms with no completed
run for 3 hours (the operators' signal). The rules: ``xpm_sync.domain.hourly``."""

from __future__ import annotations

from xpm_sync.coldstart import loading

# The GC is paused while the handler's modules load: xpm_sync.coldstart.
with loading():
    from typing import Any

    from aws_lambda_powertools.logging import correlation_paths
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from xpm_sync import composition
    from xpm_sync.adapters.metrics import record_dispatch_metrics
    from xpm_sync.domain.hourly import plan_hour
    from xpm_sync.observability import logger, tracer
    from xpm_sync.runtime import usable_context
    from xpm_sync.sync.keep_alive import due_by_stored_tokens


# Firms named in one log line at most: the count says the rest.
_FIRMS_LOGGED = 100


class DispatchIncomplete(Exception):
    """SQS refused some of the hour's messages: the invocation fails (an alarm, and Lambda's own
    retries of the schedule's event, whose repeats SQS drops as duplicates) once all else is sent."""


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
def _handle(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    # The schedule's event carries nothing the dispatch needs: any invocation means "it is time".
    configs, queue = composition.dispatch_configs()
    now = composition.clock.now()
    plan = plan_hour(configs.hourly_candidates(), now)
    # The runs first: nothing about an idle connection's tokens may keep them from being queued.
    runs = queue.enqueue_many(plan.sync_firm_ids, "schedule")
    if plan.idle_without_recorded_refresh:
        tokens = composition.dispatch_token_reader()
        if tokens is None:
            logger.warning(
                "idle connections with no recorded refresh left unjudged: TOKEN_SECRET_PREFIX is not set",
                extra={"firms": len(plan.idle_without_recorded_refresh)},
            )
        else:
            plan.keep_alive_firm_ids += due_by_stored_tokens(plan.idle_without_recorded_refresh, tokens, now)
    keep_alives = queue.enqueue_keep_alives(plan.keep_alive_firm_ids)
    notices = queue.enqueue_notices(plan.notice_firm_ids)
    record_dispatch_metrics(
        firms_queued=runs.count,
        keep_alives_queued=keep_alives.count,
        firms_without_completed_run=plan.firms_without_completed_run,
    )
    logger.info(
        "queued hourly syncs",
        extra={
            "firms": runs.count,
            "keep_alives": keep_alives.count,
            "reconnect_notices": notices.count,
            "firms_without_completed_run": plan.firms_without_completed_run,
        },
    )
    _report_left_out(plan.unreadable_firm_ids, refused=runs.refused + keep_alives.refused + notices.refused)
    return {"queued": runs.count}


def _report_left_out(unreadable: list[str], *, refused: list[str]) -> None:
    """Tell the operators which firms this hour left out, and fail the invocation if SQS refused any."""
    if unreadable:
        logger.error(
            "configs holding a date that cannot be read: left out of what needed it",
            extra={"firms": unreadable[:_FIRMS_LOGGED], "count": len(unreadable)},
        )
    if refused:
        logger.error(
            "SQS refused these firms' hourly messages",
            extra={"firms": refused[:_FIRMS_LOGGED], "count": len(refused)},
        )
        raise DispatchIncomplete(f"SQS refused {len(refused)} of the hour's messages")


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    answer: dict[str, int] = _handle(event, usable_context(context))
    return answer
