"""Comparison tables from the runs DataFrame (`runs.COLUMNS`) and the per-document predictions.

Stages are compared on the same held-out documents, so the tests are paired: an exact McNemar
test on the degenerate flags and a paired bootstrap interval for the mean CER difference.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import bootstrap
from statsmodels.stats.contingency_tables import mcnemar

from degenbench.config import STAGES
from degenbench.stages.store import COMPLETE

log = logging.getLogger(__name__)


def relative_reduction(before: float, after: float) -> float:
    """The paper's measure of what DPO did to degeneration: (before - after) / before; e.g.
    Nanonets-OCR2-3B, SFT 1.61% -> DPO 0.20%: 0.876. NaN where nothing looped before."""
    return (before - after) / before if before else float("nan")


def best_dpo(runs: pd.DataFrame) -> pd.DataFrame:
    """Per family, the DPO run with the lowest degeneration, then the lowest CER. The choice is
    made on the evaluation documents themselves, as the paper reports its best beta."""
    dpo = runs[runs.stage == "dpo"].sort_values(["family", "degeneration_rate", "cer", "beta"])
    return dpo.groupby("family", sort=True).head(1)


def stage_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Family x stage: vanilla, SFT and the best-beta DPO run, with the numbers the paper reports."""
    rows = pd.concat([runs[runs.stage != "dpo"], best_dpo(runs)])
    cols = ["family", "stage", "beta", "n_docs", "n_degenerate", "degeneration_rate", "deg_ci95_lo",
            "deg_ci95_hi", "cer", "ned", "score", "json_valid_rate", "max_new_tokens", "run_id"]
    order = rows.stage.map({s: i for i, s in enumerate(STAGES)})
    return rows.assign(_o=order).sort_values(["family", "_o"])[cols].reset_index(drop=True)


def beta_sweep(runs: pd.DataFrame) -> pd.DataFrame:
    """Every DPO run by beta, beside its family's SFT run."""
    sft = runs[runs.stage == "sft"].set_index("family")
    dpo = runs[runs.stage == "dpo"].copy()
    for col in ("degeneration_rate", "deg_ci95_lo", "deg_ci95_hi", "cer"):
        dpo[f"sft_{col}"] = dpo.family.map(sft[col])
    return dpo[["family", "beta", "n_docs", "n_degenerate", "degeneration_rate", "deg_ci95_lo", "deg_ci95_hi",
                "sft_degeneration_rate", "sft_deg_ci95_lo", "sft_deg_ci95_hi", "cer", "sft_cer", "score",
                "json_valid_rate", "dpo_skipped"]] \
        .reset_index(drop=True)


def paired(a: pd.DataFrame, b: pd.DataFrame, label: str, seed: int = 0, resamples: int = 9999) -> dict:
    """Run b against run a on the same documents (per-document frames indexed by doc_id, with
    `degenerate` and `cer`): exact McNemar on the degenerate flags, and a paired bootstrap (BCa)
    95% interval for mean CER of b minus a."""
    if set(a.index) != set(b.index):
        raise ValueError(f"{label}: the two runs were evaluated on different documents "
                         f"({len(set(a.index) ^ set(b.index))} differ); compare runs of one held-out set")
    b = b.loc[a.index]
    only_a = int((a.degenerate & ~b.degenerate).sum())  # looped in a, not in b: fixed
    only_b = int((~a.degenerate & b.degenerate).sum())  # new loops in b
    both = int((a.degenerate & b.degenerate).sum())
    p = mcnemar([[both, only_a], [only_b, len(a) - both - only_a - only_b]], exact=True).pvalue
    diff = (b.cer - a.cer).to_numpy()
    lo, hi = _mean_ci(diff, seed, resamples)
    return {"n_docs": len(a), "loops_fixed": only_a, "loops_new": only_b, "loops_both": both,
            "mcnemar_p": float(p), "cer_diff": float(diff.mean()), "cer_diff_ci95_lo": lo,
            "cer_diff_ci95_hi": hi}


def _mean_ci(diff: np.ndarray, seed: int, resamples: int) -> tuple[float, float]:
    """Bootstrap 95% interval of the mean: BCa, or the percentile interval where BCa is undefined
    (nearly all differences equal, as when two stages agree on most documents)."""
    if len(diff) == 0:
        return float("nan"), float("nan")
    if np.ptp(diff) <= 1e-12:  # a constant difference: the interval is that constant
        return float(diff[0]), float(diff[0])
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns, then returns NaN, where BCa is undefined
        ci = bootstrap((diff,), np.mean, n_resamples=resamples, random_state=seed).confidence_interval
    if np.isnan([ci.low, ci.high]).any():
        ci = bootstrap((diff,), np.mean, n_resamples=resamples, random_state=seed,
                       method="percentile").confidence_interval
    return float(ci.low), float(ci.high)


def comparisons(runs: pd.DataFrame, predictions: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per family: vanilla -> SFT, and SFT -> DPO at each beta, paired by document."""
    per_doc = {rid: g.set_index("doc_id")[["degenerate", "cer"]] for rid, g in predictions.groupby("run_id")}
    out = []
    for family, g in runs.groupby("family", sort=True):
        by = {s: g[g.stage == s] for s in STAGES}
        steps = []
        if len(by["vanilla"]) and len(by["sft"]):
            steps.append(("vanilla", by["vanilla"].iloc[0], by["sft"].iloc[0]))
        if len(by["sft"]):
            steps += [("sft", by["sft"].iloc[0], d) for _, d in by["dpo"].iterrows()]
        elif len(by["dpo"]):  # said, not dropped silently: the runs table still lists them
            log.warning("%s: no finished SFT run to compare its DPO runs with; run stage=sft", family)
        for before, a, b in steps:
            if a.run_id not in per_doc or b.run_id not in per_doc:
                log.warning("%s: no predictions for %s or %s; left out", family, a.run_id, b.run_id)
                continue
            out.append({"family": family, "from": before, "to": b.stage, "beta": b.beta,
                        "deg_from": a.degeneration_rate, "deg_to": b.degeneration_rate,
                        "relative_reduction": relative_reduction(a.degeneration_rate, b.degeneration_rate),
                        "cer_from": a.cer, "cer_to": b.cer,
                        **paired(per_doc[a.run_id], per_doc[b.run_id], f"{a.run_id} vs {b.run_id}", seed)})
    return pd.DataFrame(out)


def reductions(comp: pd.DataFrame) -> pd.DataFrame:
    """Per family, its best DPO run (lowest degeneration, then CER) against SFT with the paper's
    relative reduction; the last row is the mean over families where one is defined."""
    vs = comp[comp["from"] == "sft"]
    if vs.empty:
        return pd.DataFrame()
    best = vs.sort_values(["family", "deg_to", "cer_to", "beta"]).groupby("family", sort=True).head(1)
    out = best[["family", "beta", "deg_from", "deg_to", "relative_reduction", "mcnemar_p",
                "cer_from", "cer_to"]].rename(columns={"deg_from": "sft_deg", "deg_to": "dpo_deg",
                                                       "cer_from": "sft_cer", "cer_to": "dpo_cer"})
    mean = {"family": "mean", "relative_reduction": out.relative_reduction.mean()}  # NaNs skipped
    return pd.concat([out, pd.DataFrame([mean])], ignore_index=True)


def pair_stats(artifacts_dir: str | Path, runs: pd.DataFrame) -> pd.DataFrame:
    """The pair sets behind the DPO runs in `runs` (found by the key each run's config gives them):
    documents, candidates, degenerate (of which cut by loop-aware stopping) and good ones, pairs."""
    from omegaconf import OmegaConf

    from degenbench.stages.graph import Keys

    rows, seen = [], set()
    for r in runs[(runs.stage == "dpo") & runs.run_dir.notna()].itertuples():
        cfg = OmegaConf.load(Path(r.run_dir) / "config.yaml")
        d = Path(artifacts_dir) / "pairs" / f"{r.family}-{Keys(cfg).pairs}"
        if d in seen or not (d / COMPLETE).exists():
            continue
        seen.add(d)
        s = json.loads((d / "stats.json").read_text())
        rows.append({k: s.get(k) for k in ("family", "documents", "candidates", "degenerate_candidates",
                                            "loop_stopped_candidates", "good_candidates",
                                            "docs_with_degenerate", "pairs")})
    return pd.DataFrame(rows)


def loop_overhead(pred: pd.DataFrame) -> tuple[float, float]:
    """(seconds, share) a run's batches spent decoding past their last non-degenerate row: a
    batch runs until its longest row stops, so one loop holds the whole batch to the token limit.
    Per batch: its seconds x (1 - longest non-degenerate row / longest row)."""
    if "batch" not in pred or pred.batch.isna().all():
        return float("nan"), float("nan")
    extra = 0.0
    for _, b in pred.groupby("batch"):
        longest, clean = b.new_tokens.max(), b.loc[~b.degenerate, "new_tokens"].max()
        clean = 0 if pd.isna(clean) else clean
        extra += b.seconds.sum() * (1 - clean / longest) if longest else 0.0
    total = pred.seconds.sum()
    return extra, (extra / total if total else float("nan"))


def cost(runs: pd.DataFrame, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """What loops cost per run: tokens and generation seconds on degenerate outputs (each row's
    equal share of its batch), and with per-document predictions the batch time loops added."""
    out = runs[["family", "stage", "beta", "n_docs", "n_degenerate", "new_tokens", "new_tokens_degenerate",
                "generate_seconds", "generate_seconds_degenerate", "run_id"]].copy()
    out["token_share_degenerate"] = out.new_tokens_degenerate / out.new_tokens
    out["seconds_share_degenerate"] = out.generate_seconds_degenerate / out.generate_seconds
    if predictions is not None:
        over = {rid: loop_overhead(g) for rid, g in predictions.groupby("run_id")}
        out["loop_overhead_seconds"] = [over.get(r, (float("nan"),) * 2)[0] for r in out.run_id]
        out["loop_overhead_share"] = [over.get(r, (float("nan"),) * 2)[1] for r in out.run_id]
    return out
