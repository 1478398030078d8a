"""Numerical faults and security: NaN losses stop training and keep the checkpoint before them;
no remote code unless a family opts in (and the log says which); only safetensors weights; secrets
from the environment never reach a file a run writes."""
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from safetensors.torch import load_file

from degenbench.models import families
from degenbench.config import compose, known_families
from degenbench.stages.graph import run_job
from conftest import TINY

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


def test_nan_loss_stops_training_clearly_and_keeps_the_checkpoint_before_it(tmp_path):
    # Adam at lr 1e30 turns the weights to garbage after one step: step 2's loss is NaN. The loss
    # is logged every 3 steps, and the checkpoints are saved every step: the guard must still stop
    # before a checkpoint of the NaN step is written.
    cfg = compose(TINY + ["stage=sft", f"paths.results_dir={tmp_path}", "sft.trainer.max_steps=6",
                          "sft.trainer.learning_rate=1e30", "sft.trainer.logging_steps=3", "checkpoint.save_steps=1"])
    with pytest.raises(FloatingPointError, match=r"loss became nan .* at step 2; the last checkpoint "
                                                 r"before it is kept: .*checkpoint-1\. Lower the learning rate"):
        run_job(cfg)
    (partial,) = (tmp_path / "artifacts" / "sft").glob(".*.partial")
    assert [p.name for p in (partial / "trainer").glob("checkpoint-*")] == ["checkpoint-1"]
    state = json.loads((partial / "trainer" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and all(h["loss"] < 1e3 for h in state["log_history"] if "loss" in h)
    assert load_file(partial / "trainer" / "checkpoint-1" / "model.safetensors")  # whole, readable
    assert not list((tmp_path / "artifacts" / "sft").glob("*/_COMPLETE.json"))  # nothing was finished


def test_remote_code_is_off_unless_a_family_opts_in_and_the_log_says_which(caplog):
    for name in known_families():  # the shipped configs: every family off
        assert compose([f"family={name}"]).family.trust_remote_code is False, name
    caplog.set_level(logging.INFO, logger="degenbench")
    families.load(compose(["family=gemma-3-4b"]).family, "cpu")
    assert "family gemma-3-4b: trust_remote_code is off; no code from" in caplog.text
    caplog.clear()
    families.load(compose(["family=gemma-3-4b", "family.trust_remote_code=true"]).family, "cpu")
    assert any(r.levelno == logging.WARNING and "opts in to trust_remote_code: code from" in r.getMessage()
               for r in caplog.records)


def is_pickle(path: Path) -> bool:
    """A pickle by name, by its opening bytes, or torch.save's zip with a data.pkl inside."""
    head = path.read_bytes()[:4]
    if path.suffix in PICKLE_SUFFIXES or head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True
    if head == b"PK\x03\x04":
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    return False


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_secrets_never_reach_any_file_and_only_safetensors_hold_weights(tmp_path):
    secrets = {"WANDB_API_KEY": "wandbsecret0123456789abcdef0123456789ab", "HF_TOKEN": "hf_secretTokenNotForFiles42"}
    env = {**os.environ, **secrets}
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "degenbench", f"paths.results_dir={results}", *TINY, "stage=dpo",
           "sft.method=lora", "logger=offline"]  # W&B writes its offline runs too
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    files = [p for p in results.rglob("*") if p.is_file()]
    assert len(files) > 50 and any(p.suffix == ".wandb" for p in files)
    for p in files:
        data = p.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in data, f"{name} written to {p}"
    assert not [p for p in files if is_pickle(p)]
    weights = {p.name for p in files if "model" in p.name and p.suffix in {".safetensors", ".bin", ".pt"}}
    assert weights == {"adapter_model.safetensors"}  # LoRA SFT and DPO: adapters, as safetensors
