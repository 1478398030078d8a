"""Candidate sampling: N seeded samples per training document from the SFT model."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig
from tqdm.auto import tqdm

from degenbench import io
from degenbench.models.chat import page_check
from degenbench.documents import Document, open_pages
from degenbench.decoding.generate import decoding_record, generate
from degenbench.stages.store import Shards

log = logging.getLogger(__name__)
CANDIDATES = "candidates.parquet"


def sample_candidates(cfg: DictConfig, model, processor, docs: list[Document], out: Path) -> dict:
    """`out/candidates.parquet`: one row per (document, candidate) with text and limit flags.
    Each finished batch is kept as a shard in `out/shards/`: a killed build resumes after the last
    one, and, every batch being seeded on its own, gives the same candidates as an unbroken run."""
    s = cfg.sampling
    starts = range(0, len(docs), s.batch_size)
    shards = Shards(out / "shards", len(starts), f"sampling {cfg.family.name}")
    with tqdm(total=len(docs), desc=f"sample {cfg.family.name}", unit="doc") as bar:
        for b, start in enumerate(starts):
            if b not in shards.kept:
                skipped = []  # pages that fail evaluation's checks: counted, never sampled
                batch = open_pages(docs[start:start + s.batch_size], cfg.data.get("max_image_pixels"), skipped,
                                   page_check(cfg.family, processor))
                outs = generate(model, processor, cfg.family, [im for _, im in batch], s,
                                num_return_sequences=s.n, seed=s.seed * 1_000_003 + b) if batch else []
                shards.put(b, [{"doc_id": doc.id, "candidate": j, "text": o.text, "new_tokens": o.new_tokens,
                                "hit_limit": o.hit_limit, "loop_stopped": o.loop_stopped, "token_ids": o.token_ids,
                                **o.inputs}
                               for i, (doc, _) in enumerate(batch) for j, o in enumerate(outs[i * s.n:(i + 1) * s.n])],
                           skipped)
            bar.update(len(docs[start:start + s.batch_size]))
    table, skipped = shards.read()
    with io.atomic_path(out / CANDIDATES) as tmp:
        table.to_parquet(tmp, index=False)
    shutil.rmtree(out / "shards")
    return {"n_docs": len(docs) - len(skipped), "n_candidates": len(table), "resumed_batches": len(shards.kept),
            "n_skipped": len(skipped), "skipped": skipped,
            "decoding": decoding_record(model, s, s.n)}
