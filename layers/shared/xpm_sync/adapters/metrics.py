"""Operator metrics of each run, as CloudWatch embedded metrics (EMF) in namespace ``XpmSync``.

The only dimension is Powertools' ``service``: a firm id as a dimension would make one metric per
firm (cost, and alarms that cannot cover new firms). The firm and run ids travel as EMF metadata
instead, so Logs Insights can still find the run behind a spike.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from xpm_sync.domain.runs import OUTCOMES, SyncRun
from xpm_sync.observability import metrics

# Metric names per entity, e.g. UsersCreated, ClientsFailed (the dashboard and alarms use these).
ENTITY_METRIC_PREFIX = {"user": "Users", "client": "Clients"}


def record_metric_name(entity: str, outcome: str) -> str:
    return f"{ENTITY_METRIC_PREFIX.get(entity, entity.title())}{outcome.title()}"


def record_run_metrics(run: SyncRun, duration_seconds: float) -> None:
    """Emit one EMF document for a finished run.

    Metadata belongs to a whole EMF document, and one worker invocation runs up to ten firms, so
    each run is flushed on its own; otherwise every run in the batch would carry the last firm's id.
    Zeros are emitted too, so sums over time are right and alarms see data rather than gaps.
    """
    for entity, counts in run.counts.items():
        for outcome in OUTCOMES:
            metrics.add_metric(
                name=record_metric_name(entity, outcome), unit=MetricUnit.Count, value=counts.get(outcome, 0)
            )
    metrics.add_metric(name="XpmCalls", unit=MetricUnit.Count, value=run.xpm_calls)
    metrics.add_metric(name="RunDuration", unit=MetricUnit.Milliseconds, value=round(duration_seconds * 1000))
    metrics.add_metric(name="Runs", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="SuccessfulRuns", unit=MetricUnit.Count, value=int(run.status == "success"))
    metrics.add_metric(name="PartialRuns", unit=MetricUnit.Count, value=int(run.status == "partial"))
    metrics.add_metric(name="FailedRuns", unit=MetricUnit.Count, value=int(run.status == "failed"))
    metrics.add_metric(name="RunEntries", unit=MetricUnit.Count, value=run.entry_count)
    metrics.add_metadata(key="firm_id", value=run.firm_id)
    metrics.add_metadata(key="run_id", value=run.run_id)
    metrics.add_metadata(key="trigger", value=run.trigger)
    metrics.add_metadata(key="status", value=run.status)
    metrics.flush_metrics()
