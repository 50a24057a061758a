"""Issue 21, "operator signals that mean something": every alarm and every dashboard widget of
template.yaml names a metric the code emits, in the namespace and with the dimensions it emits; the
alarms page on the system's faults only; the dashboard shows both the system's faults and the
problems only firms can fix.

What the code emits is read from the EMF documents that ``record_run_metrics`` and the dispatcher's
handler print when they run here, never from a list kept by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from xpm_sync.adapters import aws as aws_clients
from xpm_sync.adapters.metrics import record_notification, record_run_crashed, record_run_metrics
from xpm_sync.domain.clock import iso
from xpm_sync.domain.faults import FIRM_PROBLEM_CODES, SYSTEM_FAULT_CODES
from xpm_sync.domain.runs import SyncRun, new_counts
from xpm_sync.observability import metrics

from functions.sync_dispatch.app import lambda_handler as dispatch_handler
from local.lambda_runtime import LocalContext, scheduled_event
from local.stack import StackNames, load_template
from tests.fixtures.metrics import Dimensions, Emitted, emf_documents

# The AWS metrics the template may name, and the one dimension each is published under.
AWS_METRIC_DIMENSION = {
    ("AWS/Lambda", "Errors"): ("FunctionName", "AWS::Serverless::Function"),
    ("AWS/Lambda", "Throttles"): ("FunctionName", "AWS::Serverless::Function"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): ("QueueName", "AWS::SQS::Queue"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"): ("QueueName", "AWS::SQS::Queue"),
}
# The REST API's metrics the template may name (published by ApiName and Stage).
API_GATEWAY_METRICS = {"5XXError", "4XXError"}


def run_of(status: str, **counts: int) -> SyncRun:
    run = SyncRun(
        firm_id="firm-a",
        run_id="20260302T090000Z-a",
        trigger="schedule",
        status=status,
        started_at="2026-03-02T09:00:00Z",
        counts=new_counts(),
    )
    for key, value in counts.items():
        entity, outcome = key.split("_")
        run.counts[entity][outcome] = value
    return run


@dataclass(frozen=True)
class Signals:
    """What the code emitted, as runs of every kind and an hourly dispatch produced it."""

    system_fault: dict[str, Emitted]  # a run failed on each system fault code
    crashed: Emitted  # a run stopped on an error outside the engine's own handling
    firm_problem: dict[str, Emitted]  # a run failed on each firm problem code, and a partial run
    dispatch: Emitted  # an hourly dispatch that found a firm with no completed run for 3 hours
    notification: dict[str, Emitted]  # an email due, by the notifier's outcome
    all: list[Emitted]

    def emitted(self, namespace: str, name: str, dimensions: Dimensions) -> bool:
        return any(
            doc.namespace == namespace and doc.dimensions == dimensions and name in doc.values
            for doc in self.all
        )


@pytest.fixture
def signals(aws: StackNames, capsys: pytest.CaptureFixture[str]) -> Iterator[Signals]:
    aws_clients.clear_clients()
    metrics.clear_metrics()
    capsys.readouterr()

    def emitted_by(action: Any) -> Emitted:
        action()
        [document] = emf_documents(capsys.readouterr().out)
        return document

    system_fault = {
        code: emitted_by(lambda code=code: record_run_metrics(run_of("failed"), 1.0, [code]))
        for code in sorted(SYSTEM_FAULT_CODES)
    }
    firm_problem = {
        code: emitted_by(lambda code=code: record_run_metrics(run_of("failed"), 1.0, [code]))
        for code in sorted(FIRM_PROBLEM_CODES)
    }
    firm_problem["record errors"] = emitted_by(
        lambda: record_run_metrics(run_of("partial", client_failed=5, user_failed=1), 1.0, [])
    )
    success = emitted_by(lambda: record_run_metrics(run_of("success", client_created=3), 1.0, []))
    crashed = emitted_by(lambda: record_run_crashed("firm-a", "schedule"))
    notification = {
        outcome: emitted_by(lambda outcome=outcome: record_notification(outcome, "firm-a", "run-1"))
        for outcome in ("sent", "send_failed", "error")
    }

    aws_clients.table(aws.config_table).put_item(
        Item={
            "firm_id": "firm-stuck",
            "status": "connected",
            "sync_enabled": True,
            "tenant_id": "tenant-1",
            "default_office_code": "MEL",
            "last_completed_run_started_at": iso(datetime.now(UTC) - timedelta(hours=5)),
        }
    )
    dispatch = emitted_by(lambda: dispatch_handler(scheduled_event(), LocalContext("SyncDispatchFunction")))
    assert dispatch.values["FirmsWithoutCompletedRun"] == 1

    yield Signals(
        system_fault=system_fault,
        crashed=crashed,
        firm_problem=firm_problem,
        dispatch=dispatch,
        notification=notification,
        all=[
            *system_fault.values(),
            *firm_problem.values(),
            success,
            crashed,
            dispatch,
            *notification.values(),
        ],
    )
    metrics.clear_metrics()


# --- What template.yaml names -----------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """A metric as an alarm or a dashboard widget names it."""

    where: str
    namespace: str
    name: str
    dimensions: dict[str, Any]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def watched_by_alarms(template: dict[str, Any]) -> set[str]:
    """The project's own metrics (namespace XpmSync) some alarm watches."""
    return {a.name for a in alarms(template) if a.namespace == "XpmSync"}


def alarms(template: dict[str, Any]) -> list[Named]:
    named = []
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        properties = resource["Properties"]
        # A metric-math alarm would hide its metrics from this check: none is allowed.
        assert "Metrics" not in properties, logical_id
        dimensions = {d["Name"]: d["Value"] for d in properties.get("Dimensions", [])}
        named.append(Named(logical_id, properties["Namespace"], properties["MetricName"], dimensions))
    return named


def _substituted(text: str) -> str:
    """The dashboard body with ${...} as readable markers: ${X} -> Ref:X, ${X.Attr} -> GetAtt:X.Attr."""

    def marker(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("AWS::"):
            return "ap-southeast-2" if name == "AWS::Region" else name
        return f"GetAtt:{name}" if "." in name else f"Ref:{name}"

    return re.sub(r"\$\{([^}]+)\}", marker, text)


def dashboard_widgets(template: dict[str, Any]) -> list[dict[str, Any]]:
    body = template["Resources"]["SyncDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets: list[dict[str, Any]] = json.loads(_substituted(body))["widgets"]
    return widgets


def dashboard_metrics(template: dict[str, Any]) -> list[Named]:
    named = []
    for widget in dashboard_widgets(template):
        if widget["type"] != "metric":
            continue
        for row in widget["properties"]["metrics"]:
            fields = [field for field in row if not isinstance(field, dict)]
            # CloudWatch's "..." and "." shorthands repeat an earlier row: spelled out, every row
            # can be checked on its own.
            assert "." not in fields, widget["properties"]["title"]
            assert "..." not in fields, widget["properties"]["title"]
            namespace, name, *pairs = fields
            assert len(pairs) % 2 == 0, row
            dimensions = dict(zip(pairs[::2], pairs[1::2], strict=True))
            named.append(Named(widget["properties"]["title"], namespace, name, dimensions))
    return named


def _dashboard_reference(value: str) -> tuple[str, str | None]:
    kind, _, target = value.partition(":")
    resource, _, attribute = target.partition(".")
    assert kind in ("Ref", "GetAtt"), value
    return resource, attribute or None


def _alarm_reference(value: Any) -> tuple[str, str | None]:
    if "Ref" in value:
        return value["Ref"], None
    resource, attribute = value["Fn::GetAtt"]
    return resource, attribute


def check_names_what_is_emitted(
    named: Named, signals: Signals, template: dict[str, Any], reference: Any
) -> None:
    if named.namespace == "XpmSync":
        dimensions = frozenset(named.dimensions.items())
        assert signals.emitted("XpmSync", named.name, dimensions), (
            f"{named.where}: XpmSync {named.name} {dict(dimensions)} is not a metric the code emits"
        )
        return
    if named.namespace == "AWS/ApiGateway":
        check_names_the_rest_api(named, template, reference)
        return
    expected = AWS_METRIC_DIMENSION.get((named.namespace, named.name))
    assert expected is not None, f"{named.where}: {named.namespace} {named.name} is not a metric we watch"
    dimension, resource_type = expected
    assert list(named.dimensions) == [dimension], f"{named.where}: {named.name} is published by {dimension}"
    resource, attribute = reference(named.dimensions[dimension])
    assert template["Resources"][resource]["Type"] == resource_type, named.where
    # A queue's Ref is its URL; CloudWatch names it by QueueName. A function's Ref is its name.
    assert attribute == ("QueueName" if resource_type == "AWS::SQS::Queue" else None), named.where


def check_names_the_rest_api(named: Named, template: dict[str, Any], reference: Any) -> None:
    """API Gateway publishes a REST API's metrics by the API's name (its definition's title, as
    SAM names it) and its stage: a name spelled otherwise is a metric that never has data."""
    assert named.name in API_GATEWAY_METRICS, f"{named.where}: {named.name} is not a metric we watch"
    api = template["Resources"]["XpmApi"]["Properties"]
    expected = {"ApiName": api["DefinitionBody"]["info"]["title"], "Stage": api["StageName"]}
    if reference is _dashboard_reference:  # the dashboard's body is one Fn::Sub: compare as text
        expected = {name: _as_substituted(value) for name, value in expected.items()}
    assert named.dimensions == expected, f"{named.where}: {named.name} names another API or stage"


def _as_substituted(value: dict[str, str]) -> str:
    if "Ref" in value:
        return _substituted(f"${{{value['Ref']}}}")
    return _substituted(value["Fn::Sub"])


# --- The rules ----------------------------------------------------------------------------------


def test_every_alarm_names_a_metric_the_code_emits_with_its_namespace_and_dimensions(
    signals: Signals, template: dict[str, Any]
) -> None:
    for named in alarms(template):
        check_names_what_is_emitted(named, signals, template, _alarm_reference)


def test_every_dashboard_widget_names_a_metric_the_code_emits_with_its_namespace_and_dimensions(
    signals: Signals, template: dict[str, Any]
) -> None:
    named = dashboard_metrics(template)

    assert named
    for metric in named:
        check_names_what_is_emitted(metric, signals, template, _dashboard_reference)


def test_no_alarm_moves_for_a_problem_only_a_firm_can_fix(signals: Signals, template: dict[str, Any]) -> None:
    # Given runs that failed on each problem only a firm can fix, and a run with record errors
    watched = watched_by_alarms(template)

    # Then none of them moves a metric an alarm watches: operators are not paged for them
    for cause, emitted in signals.firm_problem.items():
        moved = emitted.moved
        assert not moved & watched, f"{cause} would page operators through {moved & watched}"


@pytest.mark.parametrize(
    "code",
    [
        "XPM_UNAVAILABLE",
        "XPM_RATE_LIMITED",
        "INTERNAL_ERROR",
        "XERO_APP_CREDENTIALS_INVALID",
        "XPM_TOO_SLOW",
        "XPM_BAD_RESPONSE",
    ],
)
def test_every_system_fault_that_fails_a_run_has_an_alarm(
    signals: Signals, template: dict[str, Any], code: str
) -> None:
    watched = watched_by_alarms(template)
    moved = signals.system_fault[code].moved

    assert moved & watched, f"a run failed on {code} pages nobody"


def test_firms_with_no_completed_run_for_3_hours_have_an_alarm(
    signals: Signals, template: dict[str, Any]
) -> None:
    watched = watched_by_alarms(template)
    moved = signals.dispatch.moved

    assert "FirmsWithoutCompletedRun" in moved & watched


def test_an_hour_with_no_dispatch_at_all_raises_the_same_alarm(template: dict[str, Any]) -> None:
    # The operators' probe of 2026-12-07 (late): with the schedule disabled or deleted no firm
    # synced, no metric came, and every alarm stayed OK.
    alarm = template["Resources"]["FirmsWithoutCompletedRunAlarm"]["Properties"]

    assert alarm["TreatMissingData"] == "breaching"
    assert alarm["Period"] == 3600


def test_a_run_that_crashed_outside_the_engine_pages_as_an_internal_error(
    signals: Signals, template: dict[str, Any]
) -> None:
    # The operators' probe: the worker reports such a record failed, so Lambda's Errors never
    # moves; only the run's own metrics can say it.
    watched = watched_by_alarms(template)
    moved = signals.crashed.moved

    assert "InternalErrorRuns" in moved & watched
    assert {"Runs", "FailedRuns", "FailedRunsSystemFault"} <= moved


def test_an_email_due_and_not_sent_pages_and_one_sent_does_not(
    signals: Signals, template: dict[str, Any]
) -> None:
    # The probe of 2026-12-07 (late) left it: a firm's admin cannot miss an email that never came,
    # and SES refusing the sender fails every firm's email, hour after hour, in silence.
    watched = watched_by_alarms(template)

    for outcome in ("send_failed", "error"):
        assert "NotificationsFailed" in signals.notification[outcome].moved & watched, outcome
    assert not signals.notification["sent"].moved & watched
    assert "NotificationsSent" in signals.notification["sent"].moved


def test_the_rest_apis_server_errors_have_an_alarm(template: dict[str, Any]) -> None:
    # The API answers an unexpected error itself (500 INTERNAL_ERROR), so Lambda's Errors never see
    # it: only API Gateway's count of 5xx answers does.
    watched = [a for a in alarms(template) if a.namespace == "AWS/ApiGateway"]

    assert [a.name for a in watched] == ["5XXError"]


def test_the_dead_letter_queue_worker_errors_and_throttles_have_alarms(template: dict[str, Any]) -> None:
    watched = {(a.namespace, a.name, json.dumps(a.dimensions, sort_keys=True)) for a in alarms(template)}

    assert (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        json.dumps({"QueueName": {"Fn::GetAtt": ["SyncDeadLetterQueue", "QueueName"]}}),
    ) in watched
    assert ("AWS/Lambda", "Errors", json.dumps({"FunctionName": {"Ref": "SyncWorkerFunction"}})) in watched
    assert ("AWS/Lambda", "Throttles", json.dumps({"FunctionName": {"Ref": "SyncWorkerFunction"}})) in watched
    assert ("AWS/Lambda", "Errors", json.dumps({"FunctionName": {"Ref": "SyncDispatchFunction"}})) in watched


def test_the_dashboard_shows_both_the_systems_faults_and_the_firms_problems(
    signals: Signals, template: dict[str, Any]
) -> None:
    shown = {m.name for m in dashboard_metrics(template) if m.namespace == "XpmSync"}
    watched = watched_by_alarms(template)

    # Every system signal an alarm watches is on the dashboard...
    assert watched <= shown
    # ... and every problem only a firm can fix shows there too, though it pages nobody
    for cause, emitted in signals.firm_problem.items():
        moved = emitted.moved
        assert moved & (shown - watched), f"{cause} is not visible on the dashboard"
