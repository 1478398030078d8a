"""What names a model's evaluation run: its folder, its W&B-visible run id and the id columns
every table carries. The folder name holds the key, so a changed setting is a new run, never an
overwritten one:

outputs/runs/<run-id>/          run-id = <run_name>[-b<beta>][-<training>][-<mitigation>]-<eval set>-<key>

<training> names how the model was trained where it is not the pipeline's own: a preference
objective other than DPO's sigmoid (with or without the toy's NLL term), SFT skipped (column
`training` of every table holds the full label, rejected answers other than loops included).
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from degenbench.decoding import mitigation

IDS = ("family", "size", "stage", "beta", "seed", "eval_set", "mitigation", "training")  # what names a run
PIPELINE_OBJECTIVES = ("sigmoid", "sigmoid+sft")  # the paper's DPO, and the toy's (with NLL on the chosen)


def _untrained(cfg: DictConfig) -> bool:
    return cfg.sft.get("method") == "none"


def training_label(cfg: DictConfig) -> str:
    """How the stage's model was trained, for tables: DPO's objective (dpo.name), then what differs
    from the pipeline (rejected answers other than loops, SFT skipped); "untrained" for an SFT stage
    with sft.method=none; "" for the vanilla base, a trained SFT model and reference systems."""
    if cfg.stage == "sft":
        return "untrained" if _untrained(cfg) else ""
    if cfg.stage != "dpo":
        return ""
    parts = [str(cfg.dpo.get("name", "sigmoid"))]
    if cfg.pairs.rejected != "degenerate":
        parts.append(f"rejected={cfg.pairs.rejected}")
    if _untrained(cfg):
        parts.append("from base")
    return ", ".join(parts)


def _folder_part(cfg: DictConfig) -> str:
    """The run folder's part of the training label: nothing for the pipeline's own training (so the
    runs keep the names they had before the options)."""
    if cfg.stage == "sft":
        return "untrained" if _untrained(cfg) else ""
    if cfg.stage != "dpo":
        return ""
    name = str(cfg.dpo.get("name", "sigmoid"))
    parts = [] if name in PIPELINE_OBJECTIVES else [name]  # pairs.rejected: in the key only (as before)
    if _untrained(cfg):
        parts.append("from_base")
    return "-".join(parts)


def run_label(cfg: DictConfig) -> str:
    """The job's part of a run id: run_name (family and size), DPO's beta, the training where it is
    not the pipeline's, the mitigation."""
    label = f"{cfg.run_name}-b{cfg.dpo.beta}" if cfg.stage == "dpo" else cfg.run_name
    if part := _folder_part(cfg):
        label += "-" + part
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
            "mitigation": mitigation.label(cfg), "training": training_label(cfg)}
