"""W&B unreachable or misconfigured: the job goes on offline with one warning, its local results are
complete, the offline runs are ready for `wandb sync`, and rerunning a finished job logs nothing new."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY

WANDB = str(Path(sys.executable).parent / "wandb")
FAULTS = {  # no key at all (a fresh machine), and a key but no route to the server
    "no-key": {},
    "no-network": {"WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
                   "WANDB_BASE_URL": "http://127.0.0.1:9"},  # nothing listens on port 9
}


def job(results: Path, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "degenbench", "stage=sft", f"paths.results_dir={results}", *TINY,
           "logger=online", "logger.init_timeout=5"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


# no-network waits out W&B's connection attempts (about 45 s): run with the slow tests (.ci/run runs both)
@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
@pytest.mark.parametrize("fault", ["no-key", pytest.param("no-network", marks=pytest.mark.slow)])
def test_online_run_that_cannot_start_goes_offline_once_and_syncs_later(tmp_path, fault):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"HOME": str(tmp_path / "home"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
            **FAULTS[fault]}  # a HOME without ~/.netrc: no stored W&B credentials either
    results = tmp_path / "results"
    out = job(results, env)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert log.count("W&B could not start an online run") == 1, log[-3000:]  # SFT and eval: one warning

    (run,) = (results / "runs").iterdir()
    assert (run / "_COMPLETE.json").is_file() and (run / "predictions.parquet").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["wandb_mode"] == "offline" and metrics["wandb_run_id"].startswith(f"eval-{run.name.rsplit('-', 1)[-1]}-")
    offline = sorted(results.rglob("offline-run-*"))
    ids = {p.name.split("-", 3)[-1] for p in offline}  # offline-run-<time>-<id>: the trainer's and the eval's
    assert {re.sub(r"(-[0-9a-f]+)+$", "", i) for i in ids} == {"sft-train", "eval"}, offline
    dry = subprocess.run([WANDB, "sync", "--dry-run", *map(str, offline)], env=env, capture_output=True, text=True)
    assert dry.returncode == 0 and f"Would sync {len(offline)} run(s)" in dry.stdout + dry.stderr, dry.stderr

    rerun = job(results, env)  # finished: no W&B run at all, online or offline
    assert rerun.returncode == 0 and "already evaluated" in rerun.stdout + rerun.stderr
    assert sorted(results.rglob("offline-run-*")) == offline
    assert "W&B could not start" not in rerun.stdout + rerun.stderr
