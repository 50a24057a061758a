"""Powertools objects shared by every layer, so lower layers never import from handlers.

The Tracer traces through the X-Ray SDK only where X-Ray can receive anything: inside Lambda, with
tracing not switched off (``POWERTOOLS_TRACE_DISABLED``). Everywhere else (tests, the local stack,
the benchmark) it gets a provider that records nothing, because Powertools would otherwise import
the SDK anyway, and outside Lambda the SDK's recorder builds two botocore X-Ray clients for
centralised sampling when it is imported (about 300 ms of every cold start on our 2-core machine).
Inside Lambda the SDK patches only the two libraries the code calls out with, not every library it
knows (``patch_all`` imports each of them to find out whether it is installed).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

SERVICE = "xpm-sync"
# botocore carries every AWS call (DynamoDB, SQS, Secrets Manager, SES), httpx every Xero/XPM call.
TRACED_MODULES = ("botocore", "httpx")

_TRUTHY = frozenset({"1", "true", "yes", "on", "y", "t"})


class _UnrecordedSegment(BaseSegment):
    def close(self, end_time: int | None = None) -> None:
        return None

    def add_subsegment(self, subsegment: Any) -> None:
        return None

    def remove_subsegment(self, subsegment: Any) -> None:
        return None

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        return None


class UnrecordedProvider(BaseProvider):
    """A trace provider for where no X-Ray daemon listens: every call is accepted and dropped."""

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _UnrecordedSegment()

    @asynccontextmanager
    async def in_subsegment_async(
        self, name: str | None = None, **kwargs: Any
    ) -> AsyncGenerator[BaseSegment, None]:
        yield _UnrecordedSegment()

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def patch(self, modules: Sequence[str]) -> None:
        return None

    def patch_all(self) -> None:
        return None


def tracing_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside Lambda (not SAM local) unless POWERTOOLS_TRACE_DISABLED is set: the same rule
    Powertools applies when it decides whether its Tracer is on."""
    if environ.get("POWERTOOLS_TRACE_DISABLED", "false").lower() in _TRUTHY:
        return False
    return bool(environ.get("LAMBDA_TASK_ROOT")) and not environ.get("AWS_SAM_LOCAL")


def build_tracer(environ: Mapping[str, str] = os.environ) -> Tracer:
    if tracing_wanted(environ):
        return Tracer(service=SERVICE, patch_modules=TRACED_MODULES)
    return Tracer(service=SERVICE, disabled=True, auto_patch=False, provider=UnrecordedProvider())


logger = Logger(service=SERVICE)
tracer = build_tracer()
metrics = Metrics(namespace="XpmSync", service=SERVICE)
