"""Operator metrics per run (issue 21: operator signals that mean something): EMF documents as
Powertools prints them, and whose fault a failed run is (``domain.faults``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from xpm_sync.adapters.metrics import record_run_metrics, system_fault_metric_name
from xpm_sync.domain.faults import FIRM_PROBLEM_CODES, SYSTEM_FAULT_CODES
from xpm_sync.domain.runs import SyncRun, new_counts
from xpm_sync.observability import metrics


@pytest.fixture(autouse=True)
def clean_metrics() -> Iterator[None]:
    # The Powertools metric set is shared by every Metrics instance in the process.
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def make_run(firm_id: str, status: str, **counts: int) -> SyncRun:
    run = SyncRun(
        firm_id=firm_id,
        run_id=f"20260302T090000Z-{firm_id}",
        trigger="schedule",
        status=status,
        started_at="2026-03-02T09:00:00Z",
        finished_at="2026-03-02T09:00:42Z",
        counts=new_counts(),
        xpm_calls=7,
        entry_count=3,
    )
    for key, value in counts.items():
        entity, outcome = key.split("_")
        run.counts[entity][outcome] = value
    return run


def emitted(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def metric_names(document: dict[str, Any]) -> set[str]:
    return {metric["Name"] for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def test_a_partial_run_emits_counts_per_entity_and_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a partial run that created two users and failed three clients
    run = make_run("firm-a", "partial", user_created=2, client_failed=3, client_unchanged=40)

    # When its metrics are recorded
    record_run_metrics(run, 1.25, [])

    # Then one EMF document carries every entity/outcome count, XPM calls and the duration
    [document] = emitted(capsys)
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "XpmSync"
    assert document["UsersCreated"] == [2.0]
    assert document["ClientsFailed"] == [3.0]
    assert document["ClientsUnchanged"] == [40.0]
    assert document["UsersFailed"] == [0.0]
    assert document["XpmCalls"] == [7.0]
    assert document["RunDuration"] == [1250.0]
    assert document["PartialRuns"] == [1.0]
    assert document["FailedRuns"] == [0.0]
    assert {
        "UsersCreated",
        "UsersUpdated",
        "UsersUnchanged",
        "UsersFailed",
        "UsersSkipped",
        "ClientsCreated",
        "ClientsUpdated",
        "ClientsUnchanged",
        "ClientsFailed",
        "ClientsSkipped",
        "XpmCalls",
        "RunDuration",
        "Runs",
        "FailedRuns",
        "PartialRuns",
        "SuccessfulRuns",
    } <= metric_names(document)
    units = {m["Name"]: m["Unit"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["RunDuration"] == "Milliseconds"
    assert units["ClientsFailed"] == "Count"


def test_a_failed_run_counts_as_failed(capsys: pytest.CaptureFixture[str]) -> None:
    record_run_metrics(make_run("firm-a", "failed"), 0.2, ["XPM_UNAVAILABLE"])

    [document] = emitted(capsys)
    assert document["FailedRuns"] == [1.0]
    assert document["PartialRuns"] == [0.0]
    assert document["SuccessfulRuns"] == [0.0]


def test_the_firm_is_metadata_not_a_dimension(capsys: pytest.CaptureFixture[str]) -> None:
    record_run_metrics(make_run("firm-a", "success"), 0.2, [])

    [document] = emitted(capsys)
    dimensions = document["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert dimensions == [["service"]]
    assert document["service"] == "xpm-sync"
    # Searchable in Logs Insights, but no metric per firm.
    assert document["firm_id"] == "firm-a"
    assert document["run_id"] == "20260302T090000Z-firm-a"
    assert document["SuccessfulRuns"] == [1.0]


def test_each_run_of_a_batch_carries_its_own_firm(capsys: pytest.CaptureFixture[str]) -> None:
    # Given one worker invocation that runs two firms
    record_run_metrics(make_run("firm-a", "success", user_created=1), 0.1, [])
    record_run_metrics(make_run("firm-b", "failed"), 0.1, ["XPM_NEEDS_RECONNECT"])

    # Then each run is its own document, so neither is reported under the other firm
    first, second = emitted(capsys)
    assert (first["firm_id"], first["UsersCreated"], first["FailedRuns"]) == ("firm-a", [1.0], [0.0])
    assert (second["firm_id"], second["UsersCreated"], second["FailedRuns"]) == ("firm-b", [0.0], [1.0])


# --- Whose fault a failed run is: operators are paged on the system's faults only ----------------

SYSTEM_FAULT_METRICS = {system_fault_metric_name(code) for code in SYSTEM_FAULT_CODES}


@pytest.mark.parametrize("code", sorted(SYSTEM_FAULT_CODES))
def test_a_run_failed_on_a_system_fault_counts_as_the_systems_with_its_own_metric(
    capsys: pytest.CaptureFixture[str], code: str
) -> None:
    # Given a run that failed on a fault of the system's (XPM down, our error, our credentials...)
    run = make_run("firm-a", "failed")

    # When its metrics are recorded with the run-level codes it reported
    record_run_metrics(run, 0.2, [code])

    # Then it counts as a system fault, under the metric of that fault, and not as the firm's
    [document] = emitted(capsys)
    assert document["FailedRunsSystemFault"] == [1.0]
    assert document["FailedRunsFirmProblem"] == [0.0]
    assert document[system_fault_metric_name(code)] == [1.0]
    assert all(document[name] == [0.0] for name in SYSTEM_FAULT_METRICS - {system_fault_metric_name(code)})


@pytest.mark.parametrize("code", sorted(FIRM_PROBLEM_CODES))
def test_a_run_failed_on_a_problem_only_the_firm_can_fix_is_the_firms_and_no_system_fault(
    capsys: pytest.CaptureFixture[str], code: str
) -> None:
    # Given a run that failed on a problem only the firm can fix (reconnect, setup, office...)
    record_run_metrics(make_run("firm-a", "failed"), 0.2, [code])

    # Then it counts as the firm's problem and no system-fault metric moves
    [document] = emitted(capsys)
    assert document["FailedRunsFirmProblem"] == [1.0]
    assert document["FailedRunsSystemFault"] == [0.0]
    assert all(document[name] == [0.0] for name in SYSTEM_FAULT_METRICS)


def test_record_errors_make_a_partial_run_that_is_no_system_fault(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a run whose records failed (missing partners) but which completed
    record_run_metrics(make_run("firm-a", "partial", client_failed=312), 0.2, ["NOTIFICATION_USER_INVALID"])

    # Then it shows as partial with its failed records, and as no failed run of either kind
    [document] = emitted(capsys)
    assert (document["PartialRuns"], document["ClientsFailed"]) == ([1.0], [312.0])
    assert document["FailedRunsSystemFault"] == document["FailedRunsFirmProblem"] == [0.0]
    assert all(document[name] == [0.0] for name in SYSTEM_FAULT_METRICS)


def test_a_system_fault_beside_a_firm_problem_is_still_the_systems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given XPM was down, and the firm also has no notification user to email about it
    record_run_metrics(make_run("firm-a", "failed"), 0.2, ["NOTIFICATION_USER_INVALID", "XPM_UNAVAILABLE"])

    [document] = emitted(capsys)
    assert document["FailedRunsSystemFault"] == document["XpmUnavailableRuns"] == [1.0]
    assert document["FailedRunsFirmProblem"] == [0.0]
    assert document["run_codes"] == ["NOTIFICATION_USER_INVALID", "XPM_UNAVAILABLE"]
