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


REJECTED = ("degenerate", "worst", "mediocre", "mixed")


def _rejected(group: pd.DataFrame, chosen_quality: float, how: str, k: int) -> pd.DataFrame:
    """Up to k rejected candidates of one document, by the configured strategy."""
    degenerate = group[group["degenerate"]].sort_values("quality")
    worse = group[~group["good"] & (group["quality"] < chosen_quality)].sort_values("quality")
    if how == "degenerate":  # the paper's choice: the model's own loops
        return degenerate.head(k)
    if how == "worst":  # the lowest quality, loops or not
        return worse.head(k)
    if how == "mediocre":  # merely bad: finished, not looping, below the judge's bar
        return worse[~worse["degenerate"]].head(k)
    if how == "mixed":  # loops first, then the worst of the rest
        return pd.concat([degenerate, worse.drop(degenerate.index, errors="ignore")]).head(k)
    raise ValueError(f"pairs.rejected={how!r} is unknown; use one of {', '.join(REJECTED)}")


def _count(judged: pd.DataFrame, how: str, k: int, fallback: str) -> int:
    """How many pairs strategy `how` gives on these candidates (pairs.match: the count to match)."""
    n = 0
    for _, group in judged.groupby("doc_id", sort=False):
        good = group[group["good"]]
        if len(good):
            quality = good["quality"].max()
        elif fallback == "truth":
            quality = float("inf")
        else:
            continue
        n += len(_rejected(group, quality, how, k))
    return n


def _match(picked: list, judged: pd.DataFrame, p: DictConfig, seed: int, counts: dict) -> set:
    """The rejected rows kept: all, or with `pairs.match` (a strategy's name) a seeded random subset
    of as many as that strategy gives on the same candidates, so strategies compare at equal
    numbers of pairs (fewer where this one has fewer: recorded)."""
    rows = [i for *_, rejected in picked for i in rejected.index]
    target = p.get("match")
    if target is None:
        return set(rows)
    if target not in REJECTED:
        raise ValueError(f"pairs.match={target!r} is unknown; use null or one of {', '.join(REJECTED)}")
    n = _count(judged, target, p.max_pairs_per_doc, p.chosen_fallback)
    counts |= {"match": target, "pairs_before_match": len(rows), "pairs_to_match": n}
    if len(rows) <= n:
        return set(rows)
    return set(pd.Series(rows).sample(n=n, random_state=seed).tolist())


def build_pairs(cfg: DictConfig, docs: dict[str, Document], judged: pd.DataFrame, out: Path, processor) -> dict:
    """`out/dataset` (images, prompt, chosen, rejected, rejected_finished, doc_id) and
    `out/stats.json`; `processor` renders the family's chat template."""
    p = cfg.pairs
    rows = {"doc_id": [], "images": [], "prompt": [], "chosen": [], "rejected": [], "rejected_finished": []}
    counts = {"docs_without_chosen": 0, "chosen_from_candidate": 0, "chosen_from_truth": 0,
              "docs_with_pairs": 0}
    picked = []  # (doc_id, chosen, source, rejected rows)
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
        if not rejected.empty:
            picked.append((doc_id, chosen, source, rejected))
    matched = _match(picked, judged, p, cfg.seed, counts)
    for doc_id, chosen, source, rejected in picked:
        rejected = rejected[rejected.index.isin(matched)]
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


def kto_labels(judged: pd.DataFrame, how: str, k: int) -> pd.DataFrame:
    """KTO's unpaired examples from the judge's verdicts (dpo=kto): on every page where strategy
    `how` (pairs.rejected; the paper's: its loops) rejects candidates, up to k of them labelled
    undesirable (False) and the page's best good candidate, if it has one, desirable (True); a
    page with loops and no good sample still gives its loops (DPO would pair them with the truth).
    Columns doc_id, text, label, finished."""
    rows = []
    for doc_id, group in judged.groupby("doc_id", sort=False):
        good = group[group["good"]].sort_values("quality", ascending=False).head(1)
        bad = _rejected(group, good["quality"].iloc[0] if len(good) else float("inf"), how, k)
        if bad.empty:
            continue
        for r, label in [*((r, True) for r in good.itertuples()), *((r, False) for r in bad.itertuples())]:
            cut = bool(r.hit_limit) or bool(getattr(r, "loop_stopped", False))
            rows.append({"doc_id": doc_id, "text": r.text, "label": label, "finished": not cut})
    return pd.DataFrame(rows, columns=["doc_id", "text", "label", "finished"])


def kto_dataset(cfg: DictConfig, docs: dict[str, Document], judged: pd.DataFrame, processor):
    """`kto_labels` as TRL's unpaired vision format (images, prompt, completion, label), rendered
    by the family's chat template; a completion that never finished stays open, as in the pairs."""
    from trl.data_utils import apply_chat_template

    from degenbench.stages.data import answer_turn, prompt_turn

    labels = kto_labels(judged, cfg.pairs.rejected, cfg.pairs.max_pairs_per_doc)
    if not (~labels["label"]).any():
        raise ValueError(f"dpo=kto: no candidate of {cfg.family.name} is rejected by pairs.rejected="
                         f"{cfg.pairs.rejected}, so KTO has no undesirable example; sample more (sampling.n) "
                         "or change pairs.rejected")
    rows = {"doc_id": [], "images": [], "prompt": [], "completion": [], "label": []}
    for r in labels.itertuples():
        out = apply_chat_template({"prompt": prompt_turn(cfg.family), "completion": answer_turn(r.text)}, processor)
        rows["doc_id"].append(r.doc_id)
        rows["images"].append([page_ref(docs[r.doc_id])])
        rows["prompt"].append(out["prompt"])
        rows["completion"].append(out["completion"] if r.finished else r.text)
        rows["label"].append(bool(r.label))
    return with_images(rows)
