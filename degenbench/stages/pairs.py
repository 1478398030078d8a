"""Preference pairs from judged candidates, saved in TRL's standard vision preference format: the
chat template already applied (so a rejected answer that never finished stays open, see
data.preference_texts), the page as an encoded image."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from degenbench import io
from degenbench.documents import Document
from degenbench.stages.data import page_ref, preference_texts, with_images

log = logging.getLogger(__name__)
DATASET, STATS, JUDGED = "dataset", "stats.json", "judged.parquet"


def _rejected(group: pd.DataFrame, chosen_quality: float, how: str, k: int) -> pd.DataFrame:
    """Up to k rejected candidates of one document, by the configured strategy."""
    degenerate = group[group["degenerate"]].sort_values("quality")
    worse = group[~group["good"] & (group["quality"] < chosen_quality)].sort_values("quality")
    if how == "degenerate":  # the paper's choice: the model's own loops
        return degenerate.head(k)
    if how == "worst":
        return worse.head(k)
    if how == "mixed":  # loops first, then the worst of the rest
        return pd.concat([degenerate, worse.drop(degenerate.index, errors="ignore")]).head(k)
    raise ValueError(f"pairs.rejected={how!r} is unknown; use degenerate, worst or mixed")


def build_pairs(cfg: DictConfig, docs: dict[str, Document], judged: pd.DataFrame, out: Path, processor) -> dict:
    """`out/dataset` (images, prompt, chosen, rejected, rejected_finished, doc_id) and
    `out/stats.json`; `processor` renders the family's chat template."""
    p = cfg.pairs
    rows = {"doc_id": [], "images": [], "prompt": [], "chosen": [], "rejected": [], "rejected_finished": []}
    counts = {"docs_without_chosen": 0, "chosen_from_candidate": 0, "chosen_from_truth": 0,
              "docs_with_pairs": 0}
    for doc_id, group in judged.groupby("doc_id", sort=False):
        good = group[group["good"]].sort_values("quality", ascending=False)
        if len(good):
            chosen, quality, source = good.iloc[0]["text"], good.iloc[0]["quality"], "candidate"
        elif p.chosen_fallback == "truth":
            chosen, quality, source = docs[doc_id].answer, float("inf"), "truth"
        else:
            counts["docs_without_chosen"] += 1
            continue
        rejected = _rejected(group, quality, p.rejected, p.max_pairs_per_doc)
        if rejected.empty:
            continue
        counts[f"chosen_from_{source}"] += 1
        counts["docs_with_pairs"] += 1
        image = page_ref(docs[doc_id])  # it was sampled: its page passed the checks
        cut = rejected["hit_limit"] | rejected.get("loop_stopped", False)
        for text, unfinished in zip(rejected["text"], cut):
            rows["doc_id"].append(doc_id)
            rows["images"].append([image])
            rows["rejected_finished"].append(not unfinished)
            for k, v in preference_texts(processor, cfg.family, chosen, text, not unfinished).items():
                rows[k].append(v)
    if rows["doc_id"]:  # `datasets` cannot reload an empty saved dataset; stats say why it is empty
        with_images(rows).save_to_disk(str(out / DATASET))
    judged.drop(columns=["token_ids"], errors="ignore").to_parquet(out / JUDGED, index=False)
    n_deg = judged.groupby("doc_id")["degenerate"].any()
    n_good = judged.groupby("doc_id")["good"].any()
    stats = {
        "documents": int(judged["doc_id"].nunique()), "candidates": len(judged),
        "degenerate_candidates": int(judged["degenerate"].sum()),
        "loop_stopped_candidates": int(judged["loop_stopped"].sum()) if "loop_stopped" in judged else 0,
        "degenerate_share": float(judged["degenerate"].mean()) if len(judged) else 0.0,
        "good_candidates": int(judged["good"].sum()),
        "docs_with_degenerate": int(n_deg.sum()), "docs_without_degenerate": int((~n_deg).sum()),
        "docs_degenerate_and_good": int((n_deg & n_good).sum()),  # a looping and a good candidate
        "family": cfg.family.name, "pairs": len(rows["doc_id"]), **counts, "rejected_strategy": p.rejected,
        "rejected_unfinished": sum(not f for f in rows["rejected_finished"]),
        **judged.attrs.get("judge", {}),  # the LLM judge's counts: judged, unparsed
    }
    io.write_json(out / STATS, stats)
    log.info("pairs %s: %d pairs from %d documents (%d of them with a degenerate candidate)",
             cfg.family.name, stats["pairs"], stats["documents"], stats["docs_with_degenerate"])
    return stats
