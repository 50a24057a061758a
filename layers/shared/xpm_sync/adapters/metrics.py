"""Operator metrics, as CloudWatch embedded metrics (EMF) in namespace ``XpmSync``.

The only dimension is Powertools' ``service``: a firm id as a dimension would make one metric per
firm (cost, and alarms that cannot cover new firms). The firm and run ids travel as EMF metadata
instead, so Logs Insights can still find the run behind a spike.

The metrics keep the system's faults apart from problems only a firm can fix
(``domain.faults``): template.yaml's alarms page on the first kind alone, and its dashboard shows
both. docs/ARCHITECTURE.md ("Operator signals") lists every metric and alarm.
"""

from __future__ import annotations

from collections.abc import Collection

from aws_lambda_powertools.metrics import MetricUnit

from xpm_sync.domain.faults import SYSTEM_FAULT_CODES, failed_run_fault
from xpm_sync.domain.runs import OUTCOMES, SyncRun
from xpm_sync.observability import metrics

# Metric names per entity, e.g. UsersCreated, ClientsFailed (the dashboard and alarms use these).
ENTITY_METRIC_PREFIX = {"user": "Users", "client": "Clients"}


def record_metric_name(entity: str, outcome: str) -> str:
    return f"{ENTITY_METRIC_PREFIX.get(entity, entity.title())}{outcome.title()}"


def system_fault_metric_name(code: str) -> str:
    """Runs that reported one system-fault code, e.g. XPM_UNAVAILABLE -> XpmUnavailableRuns."""
    return "".join(word.title() for word in code.split("_")) + "Runs"


def record_run_metrics(run: SyncRun, duration_seconds: float, run_codes: Collection[str]) -> None:
    """Emit one EMF document for a finished run; ``run_codes`` are the codes of the run-level
    entries it reported (entity ``run``), which say whose fault a failure is.

    Metadata belongs to a whole EMF document, and one worker invocation may run several firms, so
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
    _add_outcome(run.status, run_codes)
    metrics.add_metric(name="RunEntries", unit=MetricUnit.Count, value=run.entry_count)
    metrics.add_metadata(key="firm_id", value=run.firm_id)
    metrics.add_metadata(key="run_id", value=run.run_id)
    metrics.add_metadata(key="trigger", value=run.trigger)
    metrics.add_metadata(key="status", value=run.status)
    metrics.add_metadata(key="run_codes", value=sorted(set(run_codes)))
    metrics.flush_metrics()


def record_run_crashed(firm_id: str, trigger: str) -> None:
    """Emit the EMF document of a run that stopped on an error outside the engine's own handling
    (its end could not be recorded): a failed run and an internal error, as the alarms count them.
    The worker reports the record failed, so Lambda's own Errors metric never sees it."""
    _add_outcome("failed", ["INTERNAL_ERROR"])
    metrics.add_metadata(key="firm_id", value=firm_id)
    metrics.add_metadata(key="trigger", value=trigger)
    metrics.flush_metrics()


def _add_outcome(status: str, run_codes: Collection[str]) -> None:
    """How a run ended, as the alarms and the dashboard count runs: one of each kind, zeros included."""
    fault = failed_run_fault(status, run_codes)
    metrics.add_metric(name="Runs", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="SuccessfulRuns", unit=MetricUnit.Count, value=int(status == "success"))
    metrics.add_metric(name="PartialRuns", unit=MetricUnit.Count, value=int(status == "partial"))
    metrics.add_metric(name="FailedRuns", unit=MetricUnit.Count, value=int(status == "failed"))
    metrics.add_metric(name="FailedRunsSystemFault", unit=MetricUnit.Count, value=int(fault == "system"))
    metrics.add_metric(name="FailedRunsFirmProblem", unit=MetricUnit.Count, value=int(fault == "firm"))
    for code in sorted(SYSTEM_FAULT_CODES):
        metrics.add_metric(
            name=system_fault_metric_name(code), unit=MetricUnit.Count, value=int(code in run_codes)
        )


# The notifier's outcomes that asked SES (or tried to): whether the firm's admin heard of the run.
NOTIFICATION_SENT = "sent"
NOTIFICATION_FAILURES = frozenset({"send_failed", "error"})


def record_notification(outcome: str, firm_id: str, run_id: str) -> None:
    """Emit the EMF document of an email the policy said was due: ``NotificationsSent`` and
    ``NotificationsFailed`` (SES refused or failed it, or its allowance or problems could not be
    read), zeros included. A suppressed email (the firm's 24 hours) and a notification user the
    admin must fix (a run entry) are neither: they are the product working."""
    if outcome != NOTIFICATION_SENT and outcome not in NOTIFICATION_FAILURES:
        return
    metrics.add_metric(
        name="NotificationsSent", unit=MetricUnit.Count, value=int(outcome == NOTIFICATION_SENT)
    )
    metrics.add_metric(
        name="NotificationsFailed", unit=MetricUnit.Count, value=int(outcome in NOTIFICATION_FAILURES)
    )
    metrics.add_metadata(key="firm_id", value=firm_id)
    metrics.add_metadata(key="run_id", value=run_id)
    metrics.add_metadata(key="notification", value=outcome)
    metrics.flush_metrics()


def record_dispatch_metrics(
    *, firms_queued: int, keep_alives_queued: int, firms_without_completed_run: int
) -> None:
    """Emit the hourly dispatch's EMF document: what it queued, and how many connected, enabled firms
    have had no completed run for 3 hours (``domain.hourly``), a system signal whatever the cause."""
    metrics.add_metric(name="FirmsQueued", unit=MetricUnit.Count, value=firms_queued)
    metrics.add_metric(name="KeepAlivesQueued", unit=MetricUnit.Count, value=keep_alives_queued)
    metrics.add_metric(
        name="FirmsWithoutCompletedRun", unit=MetricUnit.Count, value=firms_without_completed_run
    )
    metrics.flush_metrics()
