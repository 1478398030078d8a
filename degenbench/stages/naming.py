"""What names a model's evaluation run: its folder, its W&B-visible run id and the id columns
every table carries. The folder name holds the key, so a changed setting is a new run, never an
overwritten one:

outputs/runs/<run-id>/          run-id = <run_name>[-b<beta>][-<mitigation>]-<eval set>-<key>
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from degenbench.decoding import mitigation

IDS = ("family", "size", "stage", "beta", "seed", "eval_set", "mitigation")  # what names a run in every table


def run_label(cfg: DictConfig) -> str:
    """The job's part of a run id: run_name (family and size), DPO's beta, the mitigation."""
    label = f"{cfg.run_name}-b{cfg.dpo.beta}" if cfg.stage == "dpo" else cfg.run_name
    if not mitigation.is_none(cfg):  # e.g. -repetition_penalty=1.1
        label += "-" + mitigation.label(cfg).replace(" ", "_")
    return label


def run_dir_for(cfg: DictConfig, eval_set: str, key: str) -> Path:
    return Path(cfg.paths.runs_dir) / f"{run_label(cfg)}-{eval_set}-{key}"


def lock_for(cfg: DictConfig, run_dir: Path) -> Path:
    """The run's lock file, out of the runs folder (which holds only runs)."""
    return Path(cfg.paths.artifacts_dir) / ".locks" / "runs" / f"{run_dir.name}.lock"


def run_ids(cfg: DictConfig, eval_set: str) -> dict:
    """The values of IDS for a model's run on `eval_set`."""
    return {"family": cfg.family.name, "size": cfg.family.size, "stage": cfg.stage,
            "beta": cfg.dpo.beta if cfg.stage == "dpo" else None, "seed": cfg.seed, "eval_set": eval_set,
            "mitigation": mitigation.label(cfg)}
