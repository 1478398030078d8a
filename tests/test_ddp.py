"""Training under `accelerate launch`: DDP with two processes on CPU, same job config."""
import json
import subprocess
import sys

import pytest
from conftest import TINY


@pytest.mark.slow  # minutes on 2 cores: .ci/run runs it with the slow tests
def test_sft_runs_as_ddp_with_two_cpu_processes_and_one_wandb_run(tmp_path):
    """Both processes train; only the main one opens the W&B training run (every rank opened the
    same run before)."""
    tiny = [o for o in TINY if not o.startswith("logger=")]
    out = subprocess.run([sys.executable, "-m", "degenbench", "stage=sft", "accelerate.num_processes=2",
                          f"paths.results_dir={tmp_path}", "logger=offline", *tiny], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    (sft,) = [p for p in (tmp_path / "artifacts" / "sft").iterdir() if p.is_dir()]
    facts = json.loads((sft / "_COMPLETE.json").read_text())
    assert facts["num_processes"] == 2 and facts["distributed_type"] == "DistributedType.MULTI_CPU"
    # 8 training documents, batch 2 per process, 2 steps: two processes see the whole split once
    assert facts["steps"] == 2 and facts["log_history"][-1]["epoch"] == 1.0
    assert (sft / "model" / "model.safetensors").is_file()
    runs = list((tmp_path / "runs").glob("*/metrics.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["stage"] == "sft"
    training_runs = list(tmp_path.glob("wandb/offline-run-*-sft-train-*"))
    assert len(training_runs) == 1, training_runs
