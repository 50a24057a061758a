"""What the handlers need from the Lambda context, from whatever the caller passes.

A real invocation passes a full context. Harnesses and local tools may pass ``None`` or a stub
that reports a few milliseconds left; neither should crash a handler or make a sync think it has
no time: with no real deadline, a run is not cut short.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

# A real worker invocation starts with its full timeout (15 minutes): a context that starts with
# less than this is a stub, not a deadline.
_LEAST_REAL_START_MS = 75_000
_CONTEXT_ATTRIBUTES = ("function_name", "memory_limit_in_mb", "invoked_function_arn", "aws_request_id")


class StandInContext:
    """Used when the caller passes no usable context."""

    function_name = "xpm-sync"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:xpm-sync"
    log_group_name = "/aws/lambda/xpm-sync"
    log_stream_name = "local"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def usable_context(context: Any) -> Any:
    if context is None or not all(hasattr(context, name) for name in _CONTEXT_ATTRIBUTES):
        return StandInContext()
    return context


def unlimited() -> float:
    """No deadline."""
    return math.inf


def remaining_seconds(context: Any) -> Callable[[], float]:
    """The invocation's time left, read at each call; unlimited when the context is no deadline."""
    try:
        at_start = context.get_remaining_time_in_millis()
    except (AttributeError, TypeError):
        return unlimited
    if isinstance(at_start, bool) or not isinstance(at_start, int | float) or at_start < _LEAST_REAL_START_MS:
        return unlimited
    return lambda: float(context.get_remaining_time_in_millis()) / 1000
