"""Test-wide settings: fake AWS credentials so nothing can reach a real account, and fixtures.

Fixture modules live in tests/fixtures/ (one per concern) and are loaded as plugins here.
"""

from __future__ import annotations

import os

# Set before any boto3 client exists: a test can never talk to a real AWS account.
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_SECURITY_TOKEN"] = "testing"
os.environ["AWS_SESSION_TOKEN"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "ap-southeast-2"
os.environ.pop("AWS_PROFILE", None)
os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
os.environ["POWERTOOLS_METRICS_NAMESPACE"] = "XpmSync"
os.environ["POWERTOOLS_DEV"] = "false"

# A module another plugin imports comes first, so that pytest still rewrites its asserts.
pytest_plugins = [
    "tests.fixtures.events",
    "tests.fixtures.api",
    "tests.fixtures.aws",
    "tests.fixtures.simulator",
    "tests.fixtures.sync",
]
