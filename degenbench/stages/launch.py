"""Run a training stage here, or under `accelerate launch` (DDP/FSDP) with the same job config.

`accelerate.num_processes > 1` makes the job write its resolved config beside the artifact being
built and start `accelerate launch -m degenbench.stages.launch` on it; every process rebuilds the
same training split from that config, and process 0 saves the model and the facts.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from degenbench import io
from degenbench.documents import load_split

log = logging.getLogger(__name__)
FACTS = "facts.json"


def _train_here(cfg: DictConfig, stage: str, out: Path, sft_dir: Path | None, pairs_dir: Path | None) -> dict:
    if stage == "sft":
        from degenbench.stages.sft import train_sft

        return train_sft(cfg, load_split(cfg.data, cfg.seed).train, out)
    from degenbench.stages.dpo import train_dpo

    return train_dpo(cfg, sft_dir, pairs_dir, out)


def train(cfg: DictConfig, stage: str, out: Path, sft_dir: Path | None = None,
          pairs_dir: Path | None = None) -> dict:
    """Train `stage` into `out`; returns the facts to record with the artifact."""
    n = cfg.accelerate.num_processes
    if n <= 1:
        return _train_here(cfg, stage, out, sft_dir, pairs_dir)
    job = out / "job.yaml"
    OmegaConf.save(cfg, job, resolve=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if cfg.accelerate.config_file:  # its distributed_type (MULTI_GPU, FSDP) decides
        cmd += ["--config_file", str(cfg.accelerate.config_file)]
    else:  # torchrun-style DDP; on a CPU-only machine the trainers' use_cpu gives gloo (accelerate's
        cmd += ["--multi_gpu"]  # own --cpu launcher would need mpirun)
    cmd += ["-m", "degenbench.stages.launch", str(job), stage, str(out), str(sft_dir or ""),
            str(pairs_dir or "")]
    log.info("launching %s on %d processes: %s", stage, n, " ".join(cmd))
    subprocess.run(cmd, check=True)
    return json.loads((out / FACTS).read_text())


def main(argv: list[str]) -> None:
    """One process of a distributed training stage."""
    from accelerate import PartialState

    job, stage, out, sft_dir, pairs_dir = argv
    cfg = OmegaConf.load(job)
    facts = _train_here(cfg, stage, Path(out), Path(sft_dir) if sft_dir else None,
                        Path(pairs_dir) if pairs_dir else None)
    state = PartialState()
    if state.is_main_process:
        io.write_json(Path(out) / FACTS, {**facts, "num_processes": state.num_processes,
                                          "distributed_type": str(state.distributed_type)})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
