"""Weights & Biases: one run per job (evaluation) or per trainer; local results come first."""
from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from degenbench.tracking import provenance

log = logging.getLogger(__name__)
_offline_since: list[str] = []  # why online W&B failed in this process: warn once, then go offline


def start(cfg: DictConfig, job_type: str, name: str, run_dir: Path | None = None,
          run_id: str | None = None, group: str | None = None):
    """A W&B run grouped by family (or `group`), or None when logging is disabled. An online run
    that cannot start (no key, no network) falls back to offline with one warning: the job goes on.
    `run_id` (from the artifact or run key) makes a rerun after a crash continue the same W&B run."""
    if cfg.logger.mode == "disabled":
        return None
    import wandb

    kwargs = dict(project=cfg.logger.project, entity=cfg.logger.entity,
                  dir=str(run_dir or Path(cfg.paths.results_dir)), name=name,
                  group=group or cfg.family.name, job_type=job_type, tags=list(cfg.logger.tags),
                  config=OmegaConf.to_container(cfg, resolve=True) | {"provenance": provenance.collect(cfg)},
                  id=run_id, resume="allow" if run_id else None)
    mode = "offline" if _offline_since else cfg.logger.mode
    try:
        return wandb.init(mode=mode, settings=wandb.Settings(init_timeout=cfg.logger.get("init_timeout", 90)),
                          **kwargs)
    except Exception as e:
        if mode == "offline":
            raise
        _offline_since.append(f"{type(e).__name__}: {e}")
        wandb.teardown()  # the failed attempt still holds the run id in W&B's service process
        run = wandb.init(mode="offline", **kwargs)
        log.warning("W&B could not start an %s run (%s). Logging offline instead, for this and every "
                    "later run of this job; local results are unaffected. Upload later with `wandb "
                    "sync %s`", mode, _offline_since[0].splitlines()[0], Path(run.dir).parent)
        return run


def log_run(cfg: DictConfig, run_dir: Path, run_id: str, key: str, summary: dict,
            table: pd.DataFrame, group: str | None = None) -> dict:
    """Log an evaluation's summary and per-document table (W&B group: the family, or `group`);
    returns what to record about the run."""
    import wandb

    # the W&B id comes from the run folder's name (stage, beta, set and key): a rerun after a crash
    # continues the same W&B run, and runs sharing an evaluation key (a DPO job without pairs and
    # its SFT job, stages/reuse.py) stay apart
    wandb_id = f"eval-{key}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"
    run = start(cfg, job_type=cfg.stage, name=run_id, run_dir=run_dir, run_id=wandb_id, group=group)
    if run is None:
        return {"wandb_mode": "disabled"}
    with run:
        run.summary.update({k: v for k, v in summary.items() if not isinstance(v, (list, dict))})
        for k in ("degeneration_ci95", "json_valid_ci95"):
            run.summary[f"{k}_low"], run.summary[f"{k}_high"] = summary[k]
        nested = [c for c in ("token_ids", "attempt_outputs") if c in table]  # lists of mixed types: as text
        run.log({"predictions": wandb.Table(dataframe=table.astype({c: str for c in nested}))})
    return {"wandb_mode": run.settings.mode, "wandb_run_id": run.id,
            "wandb_project": cfg.logger.project, "wandb_dir": str(Path(run.dir).parent)}


@contextmanager
def wandb_training(cfg: DictConfig, job_type: str, name: str, out: Path):
    """A W&B run around a trainer (transformers' callback logs into the active run). Its id comes
    from the artifact being built, so a resumed build continues its W&B run, not a second one."""
    key = out.name.removesuffix(".partial").rsplit("-", 1)[-1]
    main = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch: only rank 0 logs
    run = start(cfg, job_type=job_type, name=name, run_id=f"{job_type}-{key}") if main else None
    try:
        yield ["wandb"] if run is not None else []
    finally:
        if run is not None:
            run.finish()
