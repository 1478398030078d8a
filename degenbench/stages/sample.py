"""Candidate sampling: N seeded samples per training document from the SFT model."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from degenbench import io
from degenbench.documents import Document
from degenbench.generate import generate

log = logging.getLogger(__name__)
CANDIDATES = "candidates.parquet"


def sample_candidates(cfg: DictConfig, model, processor, docs: list[Document], out: Path) -> dict:
    """`out/candidates.parquet`: one row per (document, candidate) with text and limit flags.
    Each finished batch is kept as a shard in `out/shards/`: a killed build resumes after the last
    one, and, every batch being seeded on its own, gives the same candidates as an unbroken run."""
    s, shards = cfg.sampling, out / "shards"
    shards.mkdir(exist_ok=True)
    starts = list(range(0, len(docs), s.batch_size))
    done = sum((shards / f"{b:05d}.parquet").is_file() for b in range(len(starts)))
    if done:
        log.info("sampling %s: resuming after %d of %d finished batches", cfg.family.name, done, len(starts))
    with tqdm(total=len(docs), desc=f"sample {cfg.family.name}", unit="doc") as bar:
        for b, start in enumerate(starts):
            batch, shard = docs[start:start + s.batch_size], shards / f"{b:05d}.parquet"
            if not shard.is_file():
                torch.manual_seed(s.seed * 1_000_003 + b)  # per-batch seed: same samples batch by batch
                outs = generate(model, processor, cfg.family, [d.load_image() for d in batch], s,
                                num_return_sequences=s.n)
                rows = [{"doc_id": doc.id, "candidate": j, "text": o.text, "new_tokens": o.new_tokens,
                         "hit_limit": o.hit_limit, "loop_stopped": o.loop_stopped, "token_ids": o.token_ids}
                        for i, doc in enumerate(batch) for j, o in enumerate(outs[i * s.n:(i + 1) * s.n])]
                with io.atomic_path(shard) as tmp:
                    pd.DataFrame(rows).to_parquet(tmp, index=False)
            bar.update(len(batch))
    table = pd.concat([pd.read_parquet(shards / f"{b:05d}.parquet") for b in range(len(starts))],
                      ignore_index=True)
    with io.atomic_path(out / CANDIDATES) as tmp:
        table.to_parquet(tmp, index=False)
    shutil.rmtree(shards)
    return {"n_docs": len(docs), "n_candidates": len(table), "resumed_batches": done}
