"""Test environment: offline hub, quiet W&B, and a private cache (stand-ins whose recipe a test
changes are built there; the shipped bases in standins/ are only read). And the one tiny
SFT -> DPO chain that every test which only reads a chain shares.

Set at import time, before any test module imports huggingface_hub (which reads HF_HUB_OFFLINE
once, on import); subprocesses inherit the same environment.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from types import SimpleNamespace

import pytest

_CACHE = tempfile.mkdtemp(prefix="degenbench-test-cache-")
os.environ.update(DEGENBENCH_CACHE=_CACHE, HF_HUB_OFFLINE="1", WANDB_SILENT="true")
os.environ.pop("WANDB_API_KEY", None)

# A tiny qwen2.5-vl-3b job: 12 pages, 4 held out, 2 for validation, 6 to train on.
TINY = ["family=qwen2.5-vl-3b", "logger=disabled", "device=cpu", "data.n_docs=12", "data.heldout=4",
        "data.validation=2", "data.max_new_tokens=24", "sft.method=full", "sft.trainer.max_steps=2",
        "sft.trainer.per_device_train_batch_size=2", "sampling.n=2", "sampling.batch_size=4", "pairs.rejected=mixed",
        "dpo.trainer.max_steps=1", "dpo.trainer.per_device_train_batch_size=2", "generation.batch_size=4"]
CHAIN = TINY + ["logger=offline", "dpo.trainer.logging_steps=1", "eval=[heldout,validation]"]
CHAIN_JOBS = {"vanilla": ["stage=vanilla"], "sft": ["stage=sft"], "dpo-0.1": ["stage=dpo", "dpo.beta=0.1"],
              "dpo-0.5": ["stage=dpo", "dpo.beta=0.5"]}


class Messages(logging.Handler):
    """degenbench's log messages while in use (BUILD, REUSE, DONE ...)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        logger = logging.getLogger("degenbench")
        logger.addHandler(self)
        self.level = logger.level
        logger.setLevel(logging.INFO)  # setLevel, not `.level =`: it clears the children's cached isEnabledFor
        return self.messages

    def __exit__(self, *exc):
        logger = logging.getLogger("degenbench")
        logger.removeHandler(self)
        logger.setLevel(self.level)


def grid(*overrides: str) -> list[list[str]]:
    """Every job of a multirun, as Hydra's basic sweeper splits the experiment's sweep params."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from degenbench.config import compose

    fixed = [o.input_line for o in OverridesParser.create().parse_overrides(list(overrides)) if not o.is_sweep_override()]
    params = compose(fixed, return_hydra_config=True).hydra.sweeper.params or {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + list(overrides))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def builds(messages: list[str]) -> list[str]:
    """The kinds of artifact built, in order."""
    return [m.split()[1] for m in messages if m.startswith("BUILD ")]


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    """vanilla, SFT and DPO at beta 0.1 and 0.5 of one tiny family, on the held-out and the
    validation sets, W&B offline: built once per session, only read by the tests using it."""
    from degenbench.config import compose
    from degenbench.stages.graph import run_job

    root = tmp_path_factory.mktemp("chain")
    cfgs = {name: compose(CHAIN + [f"paths.results_dir={root}"] + o) for name, o in CHAIN_JOBS.items()}
    with Messages() as messages:
        runs = {name: run_job(cfg) for name, cfg in cfgs.items()}
    return SimpleNamespace(root=root, cfgs=cfgs, runs=runs, messages=messages)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)
