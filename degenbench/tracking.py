"""Weights & Biases logging of a finished run (local results are written first, always)."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def log_run(cfg: DictConfig, run_dir: Path, run_id: str, summary: dict, table: pd.DataFrame) -> dict:
    """Log the summary and the per-document table to W&B; returns what to record about the run."""
    if cfg.logger.mode == "disabled":
        return {"wandb_mode": "disabled"}
    import wandb

    kwargs = dict(project=cfg.logger.project, entity=cfg.logger.entity, dir=str(run_dir),
                  name=run_id, group=cfg.family.name, job_type=cfg.stage, tags=list(cfg.logger.tags),
                  config=OmegaConf.to_container(cfg, resolve=True))
    mode = cfg.logger.mode
    try:
        run = wandb.init(mode=mode, **kwargs)
    except Exception as e:  # no key, no network: keep the run, offline
        if mode == "offline":
            raise
        log.warning("W&B %s init failed (%s); logging offline instead (wandb sync later)", mode, e)
        mode = "offline"
        run = wandb.init(mode=mode, **kwargs)
    with run:
        run.summary.update({k: v for k, v in summary.items() if not isinstance(v, (list, dict))})
        for k in ("degeneration_ci95", "json_valid_ci95"):
            run.summary[f"{k}_low"], run.summary[f"{k}_high"] = summary[k]
        run.log({"predictions": wandb.Table(dataframe=table.astype({"token_ids": str}))})
    return {"wandb_mode": mode, "wandb_run_id": run.id, "wandb_project": cfg.logger.project,
            "wandb_dir": str(Path(run.dir).parent)}
