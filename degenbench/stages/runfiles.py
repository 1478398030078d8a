"""Writing a run folder (model and reference runs alike), every file atomically (degenbench/io.py):

  config.yaml           the resolved config
  heldout_ids.json      the ids of the documents this run was evaluated on
  training.json         the completion record of the trained model (SFT or DPO: steps, log history)
  predictions.parquet   one row per evaluated document (output, diagnostics, quality)
  metrics.json          summary: rates with 95% intervals, means, counts, skipped documents; the
                        eval set, the artifact keys, the pairs behind a DPO model, provenance
  _COMPLETE.json        written last: the run is finished

metrics.json is written before W&B is called (tracking.log_run) and again with what W&B recorded:
a W&B failure never costs a local result.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from degenbench import io
from degenbench.tracking import wandb_log
from degenbench.documents import Document
from degenbench.metrics import summarize
from degenbench.stages import store
from degenbench.stages.naming import IDS

log = logging.getLogger(__name__)


def write_inputs(cfg: DictConfig, run_dir: Path, docs: list[Document], model_dir: Path | None) -> None:
    """What the run was asked to do: its config, its documents, the trained model's record (so the
    run folder alone can be analysed)."""
    io.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    io.write_json(run_dir / "heldout_ids.json", [d.id for d in docs])
    if model_dir is not None and (Path(model_dir).parent / store.COMPLETE).is_file():
        trained = json.loads((Path(model_dir).parent / store.COMPLETE).read_text())
        trained.pop("doc_ids", None)
        io.write_json(run_dir / "training.json", trained)


def write_predictions(run_dir: Path, table: pd.DataFrame, ids: dict) -> pd.DataFrame:
    """predictions.parquet: the per-document rows with the run's ids in front."""
    table = table.drop(columns=["run_id", *IDS], errors="ignore")  # rows taken from another run name it
    table.insert(0, "run_id", run_dir.name)
    for col in reversed(IDS):
        table.insert(1, col, ids[col])
    with io.atomic_path(run_dir / "predictions.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    return table


def write_run(cfg: DictConfig, run_dir: Path, key: str, table: pd.DataFrame, skipped: list[dict], ids: dict,
              record: dict, prov: dict, group: str | None = None) -> dict:
    """Finish a run folder from its per-document `table`: predictions.parquet, metrics.json (ids,
    `record`, the summary, provenance), the W&B run (grouped by `group`, default the family), then
    the completion marker; returns the summary."""
    run_id = run_dir.name
    table = write_predictions(run_dir, table, ids)
    summary = {"run_id": run_id, **{k: ids[k] for k in IDS}, **record,
               **summarize(table.to_dict("records"), skipped, cfg.metrics.alpha),
               "provenance": prov}
    io.write_json(run_dir / "metrics.json", summary)  # local results first: W&B may fail
    summary |= wandb_log.log_run(cfg, run_dir, run_id, key, summary, table, group=group)
    io.write_json(run_dir / "metrics.json", summary)
    io.write_json(run_dir / store.COMPLETE, {"key": key, "run_id": run_id})
    shutil.rmtree(run_dir / "shards", ignore_errors=True)
    log.info("%s: degeneration %.3f [%.3f, %.3f], CER %.3f, score %.3f, JSON valid %.3f -> %s",
             run_id, summary["degeneration_rate"], *summary["degeneration_ci95"], summary["cer"],
             summary["score"], summary["json_valid_rate"], run_dir)
    return summary
