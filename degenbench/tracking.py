"""Weights & Biases: one run per job (evaluation) or per trainer; local results come first."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def start(cfg: DictConfig, job_type: str, name: str, run_dir: Path | None = None):
    """A W&B run grouped by family, or None when logging is disabled. An online run that cannot
    start (no key, no network) falls back to offline with one warning: the job goes on."""
    if cfg.logger.mode == "disabled":
        return None
    import wandb

    kwargs = dict(project=cfg.logger.project, entity=cfg.logger.entity,
                  dir=str(run_dir or Path(cfg.paths.results_dir)), name=name,
                  group=cfg.family.name, job_type=job_type, tags=list(cfg.logger.tags),
                  config=OmegaConf.to_container(cfg, resolve=True))
    try:
        return wandb.init(mode=cfg.logger.mode, **kwargs)
    except Exception as e:
        if cfg.logger.mode == "offline":
            raise
        log.warning("W&B %s run could not start (%s); logging offline instead: `wandb sync` it "
                    "later", cfg.logger.mode, e)
        return wandb.init(mode="offline", **kwargs)


def log_run(cfg: DictConfig, run_dir: Path, run_id: str, summary: dict, table: pd.DataFrame) -> dict:
    """Log an evaluation's summary and per-document table; returns what to record about the run."""
    import wandb

    run = start(cfg, job_type=cfg.stage, name=run_id, run_dir=run_dir)
    if run is None:
        return {"wandb_mode": "disabled"}
    with run:
        run.summary.update({k: v for k, v in summary.items() if not isinstance(v, (list, dict))})
        for k in ("degeneration_ci95", "json_valid_ci95"):
            run.summary[f"{k}_low"], run.summary[f"{k}_high"] = summary[k]
        run.log({"predictions": wandb.Table(dataframe=table.astype({"token_ids": str}))})
    return {"wandb_mode": run.settings.mode, "wandb_run_id": run.id,
            "wandb_project": cfg.logger.project, "wandb_dir": str(Path(run.dir).parent)}
