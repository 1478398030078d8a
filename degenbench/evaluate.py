"""Evaluation stage: generate on the held-out documents, score each, write the run, log to W&B.

results/runs/<run-id>/
  predictions.parquet   one row per evaluated document (output, diagnostics, quality)
  metrics.json          summary: rates with 95% intervals, means, counts, skipped documents
  config.yaml           the resolved config
  heldout_ids.json      the held-out document ids this run was evaluated on
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from degenbench import families, io, tracking
from degenbench.documents import BadDocument, Document, load_documents, split
from degenbench.generate import generate
from degenbench.metrics import score_output, summarize

log = logging.getLogger(__name__)


def new_run_dir(cfg: DictConfig) -> tuple[str, Path]:
    run_id = f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.run_name}-{uuid.uuid4().hex[:6]}"
    run_dir = Path(cfg.paths.runs_dir) / run_id
    run_dir.mkdir(parents=True)
    return run_id, run_dir


def heldout_documents(cfg: DictConfig) -> list[Document]:
    _, held = split(load_documents(cfg.data), cfg.seed, cfg.data.heldout)
    return held


def _load_images(docs: list[Document], max_pixels: int | None, skipped: list[dict]):
    """Open each page; an unreadable one becomes a counted skip with its reason."""
    ok = []
    for d in docs:
        try:
            ok.append((d, d.load_image(max_pixels)))
        except BadDocument as e:
            log.warning("skipping document %s: %s", d.id, e)
            skipped.append({"id": d.id, "reason": str(e)})
    return ok


def evaluate(cfg: DictConfig, model, processor, docs: list[Document]) -> tuple[pd.DataFrame, list[dict]]:
    """Per-document records for `docs` (greedy by default) and the skipped documents."""
    rows, skipped = [], []
    bs = cfg.generation.batch_size
    with tqdm(total=len(docs), desc=f"eval {cfg.family.name}/{cfg.stage}", unit="doc") as bar:
        for start in range(0, len(docs), bs):
            batch = _load_images(docs[start:start + bs], cfg.data.get("max_image_pixels"), skipped)
            if batch:
                outputs = generate(model, processor, cfg.family, [im for _, im in batch], cfg.generation)
                for (doc, _), out in zip(batch, outputs):
                    rows.append({
                        "doc_id": doc.id, "truth": doc.text, "prediction": out.text,
                        "new_tokens": out.new_tokens, "hit_limit": out.hit_limit,
                        "seconds": out.seconds, "token_ids": out.token_ids,
                        **score_output(doc, out.text, out.hit_limit, out.token_ids, cfg.metrics)})
            bar.update(len(docs[start:start + bs]))
    return pd.DataFrame(rows), skipped


def run(cfg: DictConfig) -> Path:
    """The vanilla evaluation job: family as loaded, on the held-out documents."""
    docs = heldout_documents(cfg)
    run_id, run_dir = new_run_dir(cfg)
    log.info("run %s: %s (%s) on %d held-out documents", run_id, cfg.family.name, cfg.family.size, len(docs))
    io.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    io.write_json(run_dir / "heldout_ids.json", [d.id for d in docs])

    model, processor = families.load(cfg.family, cfg.device)
    table, skipped = evaluate(cfg, model, processor, docs)
    table.insert(0, "run_id", run_id)
    for col, val in (("family", cfg.family.name), ("size", cfg.family.size), ("stage", cfg.stage)):
        table.insert(1, col, val)
    with io.atomic_path(run_dir / "predictions.parquet") as tmp:
        table.to_parquet(tmp, index=False)

    summary = {"run_id": run_id, "family": cfg.family.name, "size": cfg.family.size,
               "stage": cfg.stage, "seed": cfg.seed, "pretrained": str(cfg.family.pretrained),
               **summarize(table.to_dict("records"), skipped, cfg.metrics.alpha)}
    io.write_json(run_dir / "metrics.json", summary)  # local results first: W&B may fail
    summary |= tracking.log_run(cfg, run_dir, run_id, summary, table)
    io.write_json(run_dir / "metrics.json", summary)
    log.info("%s: degeneration %.3f [%.3f, %.3f], CER %.3f, score %.3f, JSON valid %.3f -> %s",
             run_id, summary["degeneration_rate"], *summary["degeneration_ci95"], summary["cer"],
             summary["score"], summary["json_valid_rate"], run_dir)
    return run_dir
