"""What each handler's import (Lambda's init phase) does beyond importing: no boto3, and the GC
paused while it loads, then left as it was found, with what the import built frozen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.requirements import render

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ("api", "oauth", "sync_dispatch", "sync_worker")


def in_a_fresh_interpreter(source: str) -> str:
    """Run ``source`` with the layer on the path, as Lambda has it; its standard output."""
    path = os.pathsep.join([str(ROOT / "layers" / "shared"), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-c", source],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_no_handler_imports_boto3_which_the_layer_does_not_ship() -> None:
    # The layer ships botocore, not boto3 (pyproject.toml): importing boto3 and s3transfer cost
    # every cold start ~45 ms, and would fail in Lambda without the runtime's own copy.
    loaded = in_a_fresh_interpreter(
        "import sys, importlib\n"
        f"for name in {HANDLERS!r}:\n"
        "    importlib.import_module(f'functions.{name}.app')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 's3transfer', 'xpm_sync'}))"
    )
    assert loaded == "['xpm_sync']"
    assert "boto3" not in render()


@pytest.mark.parametrize(
    ("handler", "not_loaded"),
    [
        # The hourly dispatcher reads configs and queues messages: it runs no sync and no API route.
        ("sync_dispatch", ["xpm_sync.sync.engine", "xpm_sync.adapters.xpm.client", "xpm_sync.api.service"]),
        # The worker serves no API route.
        ("sync_worker", ["xpm_sync.api.service", "xpm_sync.api.models"]),
    ],
)
def test_a_handler_loads_only_what_its_own_work_needs(handler: str, not_loaded: list[str]) -> None:
    loaded = in_a_fresh_interpreter(
        f"import sys, functions.{handler}.app\nprint(sorted(set({not_loaded!r}) & set(sys.modules)))"
    )
    assert loaded == "[]"


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_handler_resumes_the_gc_after_its_import_and_freezes_what_it_built(handler: str) -> None:
    state = in_a_fresh_interpreter(
        f"import gc, functions.{handler}.app\nprint(gc.isenabled(), gc.get_freeze_count() > 10_000)"
    )
    assert state == "True True"


def test_a_handler_imported_with_the_gc_off_leaves_it_off() -> None:
    state = in_a_fresh_interpreter(
        "import gc\ngc.disable()\nimport functions.sync_worker.app\nprint(gc.isenabled())"
    )
    assert state == "False"


def test_a_handler_that_fails_to_load_leaves_the_gc_collecting_and_freezes_nothing() -> None:
    state = in_a_fresh_interpreter(
        "import gc\n"
        "from xpm_sync.coldstart import loading\n"
        "try:\n"
        "    with loading():\n"
        "        import no_such_module_in_the_layer\n"
        "except ImportError:\n"
        "    print(gc.isenabled(), gc.get_freeze_count())"
    )
    assert state == "True 0"
