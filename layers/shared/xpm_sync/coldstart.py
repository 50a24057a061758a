"""A handler's init phase: its module-level imports, which Lambda runs once per execution environment.

They create hundreds of modules' objects that live as long as the environment. The cyclic GC would
scan them again and again while they load and free nothing (35-50 ms of the worker's cold start on
the bench machine), so a handler loads its modules inside :func:`loading`: the GC is paused, and
what the imports built is frozen (``gc.freeze``) so that no later collection scans it either.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def loading() -> Iterator[None]:
    """Pause the cyclic GC for the block; freeze what it built when it succeeds. Either way the GC
    is left as it was found (a handler imported with the GC off leaves it off)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if collecting:
            gc.enable()
