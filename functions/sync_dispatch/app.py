"""Hourly: queue one sync message per firm whose sync is enabled (SPEC B1)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from xpm_sync import aws
from xpm_sync.config import ConfigRepository
from xpm_sync.observability import logger, metrics, tracer
from xpm_sync.settings import DispatchSettings, load_settings
from xpm_sync.wiring import sync_queue


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    parse(event=event, model=EventBridgeModel)
    settings = load_settings(DispatchSettings)
    firm_ids = ConfigRepository(aws.table(settings.config_table)).enabled_firm_ids()
    queued = sync_queue(settings.sync_queue_url).enqueue_many(firm_ids, "schedule")
    metrics.add_metric(name="FirmsQueued", unit=MetricUnit.Count, value=queued)
    logger.info("queued hourly syncs", extra={"firms": queued})
    return {"queued": queued}
