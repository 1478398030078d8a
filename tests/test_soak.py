"""Soak: three DPO jobs sharing SFT, candidates and pairs, launched in parallel as local processes
(submitit), twice in a row. The shared artifacts are built once (the others wait on the lock and
reuse them), nothing is left half-made, and the second sweep does nothing and changes nothing."""
import hashlib
import re
import subprocess
import sys

import pandas as pd
import pytest
from safetensors.torch import load_file

from conftest import TINY

BETAS = ("0.1", "0.5", "1.0")


def sweep(results):
    cmd = [sys.executable, "-m", "degenbench", "-m", "hydra/launcher=local", f"paths.results_dir={results}",
           *TINY, "stage=dpo", f"dpo.beta={','.join(BETAS)}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def job_logs(results) -> str:
    """What every job of every sweep logged (Hydra's per-job log files)."""
    return "\n".join(p.read_text() for p in sorted(results.glob("hydra/multirun_*/*/*.log")))


def fingerprint(results) -> dict:
    """Every file of the artifact store and the runs, by content."""
    return {str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
            for sub in ("artifacts", "runs") for p in sorted((results / sub).rglob("*")) if p.is_file()}


@pytest.mark.slow  # about 2.5 minutes: run by .ci/run after the default suite
def test_parallel_sweep_twice_builds_once_and_changes_nothing(tmp_path):
    sweep(tmp_path)
    first = job_logs(tmp_path)
    builds = sorted(m.group(1) for m in re.finditer(r" - BUILD (\w+) ", first))
    assert builds == ["candidates", "dpo", "dpo", "dpo", "pairs", "sft"], first[-3000:]
    # the other two jobs ran at the same time and waited for the shared builds instead of repeating them
    assert first.count("REUSE sft") == 2 and "(built by a concurrent job)" in first, first[-3000:]

    # nothing half-made; every artifact and run is whole and readable
    assert not list(tmp_path.rglob("*.partial")) and not list(tmp_path.rglob("shards"))
    for weights in tmp_path.glob("artifacts/*/*/model/*.safetensors"):
        assert load_file(weights)
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if (p / "_COMPLETE.json").is_file())
    assert [re.search(r"-dpo-b([\d.]+)-heldout-", r.name).group(1) for r in runs] == list(BETAS)
    for r in runs:
        assert len(pd.read_parquet(r / "predictions.parquet")) == 4
    before = fingerprint(tmp_path)

    sweep(tmp_path)  # the same sweep again
    second = job_logs(tmp_path)[len(first):]
    assert " - BUILD " not in second and second.count("already evaluated") == len(BETAS), second[-3000:]
    assert fingerprint(tmp_path) == before
