"""Test environment: offline hub, quiet W&B, and a private cache (stand-ins whose recipe a test
changes are built there; the shipped bases in standins/ are only read).

Set at import time, before any test module imports huggingface_hub (which reads HF_HUB_OFFLINE
once, on import); subprocesses inherit the same environment.
"""
from __future__ import annotations

import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="degenbench-test-cache-")
os.environ.update(DEGENBENCH_CACHE=_CACHE, HF_HUB_OFFLINE="1", WANDB_SILENT="true")
os.environ.pop("WANDB_API_KEY", None)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)
