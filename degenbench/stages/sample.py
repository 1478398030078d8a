"""Candidate sampling: N seeded samples per training document from the SFT model."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from degenbench.documents import Document
from degenbench.generate import generate

log = logging.getLogger(__name__)
CANDIDATES = "candidates.parquet"


def sample_candidates(cfg: DictConfig, model, processor, docs: list[Document], out: Path) -> dict:
    """`out/candidates.parquet`: one row per (document, candidate) with text and limit flags."""
    s = cfg.sampling
    rows = []
    with tqdm(total=len(docs), desc=f"sample {cfg.family.name}", unit="doc") as bar:
        for b, start in enumerate(range(0, len(docs), s.batch_size)):
            batch = docs[start:start + s.batch_size]
            torch.manual_seed(s.seed * 1_000_003 + b)  # per-batch seed: same samples batch by batch
            outs = generate(model, processor, cfg.family, [d.load_image() for d in batch], s,
                            num_return_sequences=s.n)
            for i, doc in enumerate(batch):
                for j in range(s.n):
                    o = outs[i * s.n + j]
                    rows.append({"doc_id": doc.id, "candidate": j, "text": o.text,
                                 "new_tokens": o.new_tokens, "hit_limit": o.hit_limit,
                                 "loop_stopped": o.loop_stopped,
                                 "token_ids": o.token_ids})
            bar.update(len(batch))
    pd.DataFrame(rows).to_parquet(out / CANDIDATES, index=False)
    return {"n_docs": len(docs), "n_candidates": len(rows)}
