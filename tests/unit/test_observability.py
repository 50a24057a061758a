"""Tracing: X-Ray where Lambda can receive it, nothing (and no X-Ray SDK import) elsewhere.

The Powertools Tracer keeps its configuration on the class, so each case runs in a fresh
interpreter with the environment it describes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from xpm_sync.observability import tracing_wanted

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from functions.sync_worker import app  # what a cold start imports
from xpm_sync.observability import tracer

@tracer.capture_method(capture_response=False)
def traced(value):
    return value * 2

report = {
    "sdk_imported": "aws_xray_sdk.core" in sys.modules,
    "provider": type(tracer.provider).__name__,
    "disabled": tracer.disabled,
    "traced_result": traced(21),
}
if report["sdk_imported"]:
    from aws_xray_sdk.core import patcher
    report["patched"] = sorted(patcher._PATCHED_MODULES)
print(json.dumps(report))
"""

LAMBDA_ENV = {
    "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "sync_worker"),
    "AWS_LAMBDA_FUNCTION_NAME": "SyncWorkerFunction",
    # As Lambda sets it for a sampled invocation; the SDK sends to the daemon over UDP only.
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:9",
}


def probe(extra_env: dict[str, str]) -> dict[str, object]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"POWERTOOLS_TRACE_DISABLED", "LAMBDA_TASK_ROOT", "AWS_SAM_LOCAL"}
    }
    env.update(extra_env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "0"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, False),
    ],
)
def test_tracing_is_wanted_only_inside_lambda_unless_switched_off(
    environ: dict[str, str], wanted: bool
) -> None:
    assert tracing_wanted(environ) is wanted


def test_outside_lambda_the_worker_never_loads_the_xray_sdk() -> None:
    report = probe({})
    assert report == {
        "sdk_imported": False,
        "provider": "UnrecordedProvider",
        "disabled": True,
        "traced_result": 42,
    }


def test_switched_off_inside_lambda_the_worker_never_loads_the_xray_sdk() -> None:
    report = probe({**LAMBDA_ENV, "POWERTOOLS_TRACE_DISABLED": "true"})
    assert report["sdk_imported"] is False
    assert report["traced_result"] == 42


def test_inside_lambda_the_worker_traces_aws_and_xero_calls_through_xray() -> None:
    report = probe(LAMBDA_ENV)
    assert report["sdk_imported"] is True
    assert report["disabled"] is False
    assert report["provider"] == "AsyncAWSXRayRecorder"
    assert report["patched"] == ["botocore", "httpx"]  # not every library the SDK knows
    assert report["traced_result"] == 42
