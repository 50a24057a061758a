"""Hourly: queue one sync message per firm whose sync is enabled (SPEC B1)."""

from __future__ import annotations

from xpm_sync.coldstart import loading

# The GC is paused while the handler's modules load: xpm_sync.coldstart.
with loading():
    from typing import Any

    from aws_lambda_powertools.logging import correlation_paths
    from aws_lambda_powertools.metrics import MetricUnit
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from xpm_sync.composition import dispatch_configs
    from xpm_sync.observability import logger, metrics, tracer
    from xpm_sync.runtime import usable_context


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics
def _handle(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    # The schedule's event carries nothing the dispatch needs: any invocation means "it is time".
    configs, queue = dispatch_configs()
    queued = queue.enqueue_many(configs.enabled_firm_ids(), "schedule")
    metrics.add_metric(name="FirmsQueued", unit=MetricUnit.Count, value=queued)
    logger.info("queued hourly syncs", extra={"firms": queued})
    return {"queued": queued}


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    answer: dict[str, int] = _handle(event, usable_context(context))
    return answer
