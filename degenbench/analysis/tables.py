"""Comparison tables from the runs DataFrame (`runs.COLUMNS`) and the per-document predictions.

Rows are per (family, size, eval_set, seed); rows with seed "pooled" pool the seeds (n_seeds of
them): counts summed, the degeneration rate's Wilson 95% interval on the sums (documents x seeds
as independent trials), CER/NED/score/json_valid doc-weighted means, and `deg_rate_sd` the
across-seed standard deviation of the rate (NaN for one seed), the spread that interval leaves out.

DPO's beta is chosen per (family, size, seed) on the validation eval set (`choose_beta`) and
reported on the other eval sets; validation itself is never a reported set. Where a model has no
validation runs no beta is chosen and every beta is shown. Paired per-document statistics live in
`compare`.

Reference systems (stage "reference", family = the system: degenbench/models/reference_systems.py) are rows of
the stage table and of `quality`, first; the tables that compare stages of one model (beta
choice, beta sweep, comparisons, reductions, pairs, cost) have none of them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from degenbench.analysis.compare import (KEY, MODEL, check_unique, choose_beta, comparisons, mark_chosen,
                                         paired, relative_reduction)
from degenbench.analysis.runs import VALIDATION, ordered
from degenbench.config import REFERENCE
from degenbench.metrics.stats import wilson

__all__ = ["beta_sweep", "check_unique", "choose_beta", "comparisons", "cost", "loop_overhead", "paired",
           "pair_stats", "pool", "quality", "reductions", "relative_reduction", "stage_table"]
log = logging.getLogger(__name__)
MEANS = ["cer", "ned", "score", "json_valid_rate"]  # per-document means: pooled weighted by n_docs
RATE = ["n_docs", "n_degenerate", "degeneration_rate", "deg_ci95_lo", "deg_ci95_hi", "deg_rate_sd"]
# quality apart on the pages whose truth legitimately repeats (documents' flag `repetitive`)
REPEATS = ["n_repetitive", "cer_ordinary", "cer_repetitive"]
STAGE_COLS = ["family", "size", "eval_set", "seed", "n_seeds", "stage", "beta", "beta_chosen_on", *RATE,
              *MEANS, "cer_not_degenerate", *REPEATS, "max_new_tokens", "run_id"]
SWEEP_COLS = ["family", "size", "eval_set", "seed", "n_seeds", "beta", "chosen", *RATE,
              "sft_degeneration_rate", "sft_deg_ci95_lo", "sft_deg_ci95_hi", "cer", "sft_cer", "score",
              "json_valid_rate", "dpo_skipped"]
QUALITY_COLS = ["eval_set", "system", "size", "stage", "beta", "n_seeds", "n_docs", "cer", "cer_not_degenerate",
                *REPEATS, "ned", "score", "json_valid_rate", "n_degenerate", "degeneration_rate", "deg_ci95_lo", "deg_ci95_hi"]
PAIR_STATS = ["documents", "candidates", "degenerate_candidates", "loop_stopped_candidates", "good_candidates",
              "docs_with_degenerate", "docs_degenerate_and_good", "chosen_from_candidate", "chosen_from_truth", "pairs"]
TEACHER_COLS = ["family", "size", "seed", "share", "tokens", "n_train", "n_loopable", "n_labels"]


def pool(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per group of `by` pooling its per-seed rows (see the module docstring). `beta`,
    unless grouped on, is the group's common beta, NaN where its seeds differ; `run_id` lists the
    pooled runs, comma-separated."""
    out = []
    for key, g in rows.groupby(by, dropna=False, sort=False):
        n, k = int(g.n_docs.sum()), int(g.n_degenerate.sum())
        lo, hi = wilson(k, n)
        w = g.n_docs.to_numpy(float)
        rec = {**dict(zip(by, key)), "seed": "pooled", "n_seeds": len(g), "n_docs": n, "n_degenerate": k,
               "degeneration_rate": k / n if n else np.nan, "deg_ci95_lo": lo, "deg_ci95_hi": hi,
               "deg_rate_sd": g.degeneration_rate.astype(float).std(),  # ddof 1: NaN for one seed
               **{c: float(np.dot(g[c].to_numpy(float), w) / w.sum()) if n else np.nan
                  for c in MEANS if c in g},
               "cer_not_degenerate": _weighted(g, "cer_not_degenerate", g.n_docs - g.n_degenerate),
               "run_id": ",".join(g.run_id)}
        if "n_repetitive" in g:
            rep = g.n_repetitive.fillna(0)
            rec |= {"n_repetitive": int(rep.sum()), "cer_repetitive": _weighted(g, "cer_repetitive", rep),
                    "cer_ordinary": _weighted(g, "cer_ordinary", g.n_docs - rep)}
        if "max_new_tokens" in g:
            rec["max_new_tokens"] = g.max_new_tokens.max()
        if "beta" not in rec:
            betas = set(g.beta.dropna())
            rec["beta"] = betas.pop() if len(betas) == 1 and g.beta.notna().all() else np.nan
        out.append(rec)
    return pd.DataFrame(out)


def _weighted(g: pd.DataFrame, col: str, w: pd.Series) -> float:
    """Mean of `col` over a group's runs weighted by `w` (NaN where no run has it or all weights are 0)."""
    if col not in g:
        return np.nan
    ok = g[col].notna() & (w > 0)
    return float(np.average(g.loc[ok, col].astype(float), weights=w[ok])) if ok.any() else np.nan


def _chosen_missing(dpo: pd.DataFrame, chosen: pd.Series, reported: pd.DataFrame, choice: pd.DataFrame) -> None:
    """Warn where a beta was chosen but that beta's run on a reported eval set is missing."""
    got = set(zip(*(dpo.loc[chosen, c] for c in [*MODEL, "eval_set"])))
    sets = reported.groupby(MODEL, dropna=False).eval_set.unique()
    missing = [f"{c.family} {c.size} seed {c.seed} beta {c.beta:g} on {e}" for c in choice.itertuples()
               for e in sets.get((c.family, c.size, c.seed), []) if (c.family, c.size, c.seed, e) not in got]
    if missing:
        log.warning("the beta chosen on validation has no run on a reported eval set, so no DPO row is shown "
                    "there: %s; evaluate that beta on it", "; ".join(missing))


def stage_table(runs: pd.DataFrame, choice: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (family, size, eval_set, seed) of every eval set but validation: vanilla, SFT and DPO
    at the beta chosen on validation (`beta_chosen_on`; every beta where none was chosen), then
    the pooled rows (seed "pooled"): one per stage, DPO pooling each seed's chosen beta (or per
    beta where none was chosen). The reference systems' rows (family = the system, stage
    reference) come first, per eval set and seed alike. Columns: STAGE_COLS."""
    check_unique(runs)
    choice = choose_beta(runs) if choice is None else choice
    rep = runs[runs.eval_set != VALIDATION]
    dpo = rep[rep.stage == "dpo"]
    chosen = mark_chosen(dpo, choice)
    decided = set(zip(*(choice[c] for c in MODEL)))
    keep = chosen | ~pd.Series([k in decided for k in zip(*(dpo[c] for c in MODEL))], index=dpo.index, dtype=bool)
    _chosen_missing(dpo, chosen, rep, choice)
    per_seed = pd.concat([rep[rep.stage != "dpo"].assign(beta_chosen_on=None),
                          dpo[keep].assign(beta_chosen_on=np.where(chosen[keep], VALIDATION, None))])
    per_seed = per_seed.assign(n_seeds=1, deg_rate_sd=np.nan)
    by = ["family", "size", "eval_set", "stage", "beta_chosen_on", "_beta"]  # chosen DPO pools across betas
    pooled = pool(per_seed.assign(_beta=per_seed.beta.where(per_seed.beta_chosen_on.isna())), by)
    both = pd.concat([per_seed[STAGE_COLS], pooled.reindex(columns=STAGE_COLS)], ignore_index=True)
    both = both.assign(_model=both.stage.ne(REFERENCE))  # reference systems first
    return ordered(both, ["_model", "family", "size", "eval_set", "seed", "stage", "beta"]).drop(columns="_model")


def quality(stages: pd.DataFrame) -> pd.DataFrame:
    """Every system and model at a glance, per reported eval set: the stage table's (`stage_table`)
    rows pooled over seeds (with one seed, that seed's), reference systems first, then each
    family's vanilla, SFT and DPO (at the beta chosen on validation, or every beta where none was
    chosen): CER, NED, score, JSON validity, and degeneration with its 95% interval. Columns:
    QUALITY_COLS (`system`: the family, or the reference system)."""
    q = stages[stages.seed.astype(str) == "pooled"].rename(columns={"family": "system"})
    q = q.assign(_model=q.stage.ne(REFERENCE))
    return ordered(q, ["eval_set", "_model", "system", "size", "stage", "beta"])[QUALITY_COLS]


def beta_sweep(runs: pd.DataFrame, choice: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every DPO run (every eval set, validation too) per (family, size, eval_set, seed, beta)
    beside the SFT run of its (family, size, eval_set, seed); `chosen`: the beta chosen on
    validation for its seed. Pooled rows per (family, size, eval_set, beta) pool both sides over
    the seeds (SFT over the seeds that have one). Columns: SWEEP_COLS."""
    check_unique(runs)
    choice = choose_beta(runs) if choice is None else choice
    dpo = runs[runs.stage == "dpo"]
    if dpo.empty:  # e.g. a sweep of vanilla and reference jobs
        return pd.DataFrame(columns=SWEEP_COLS)
    dpo = dpo.assign(chosen=mark_chosen(dpo, choice), n_seeds=1, deg_rate_sd=np.nan)
    side = ["n_docs", "n_degenerate", "degeneration_rate", "deg_ci95_lo", "deg_ci95_hi", "cer", "run_id"]
    sft = runs.loc[runs.stage == "sft", KEY + side].rename(columns={c: f"sft_{c}" for c in side})
    per_seed = dpo.merge(sft, on=KEY, how="left")
    by = ["family", "size", "eval_set", "beta"]
    pooled = pool(per_seed, by)
    flags = per_seed.groupby(by, dropna=False, sort=False).agg(chosen=("chosen", "all"),
                                                               dpo_skipped=("dpo_skipped", "any"))
    with_sft = per_seed.dropna(subset=["sft_n_docs"])[[*by, "seed"] + [f"sft_{c}" for c in side]]
    pooled = pooled.merge(flags.reset_index(), on=by, how="left")
    if not with_sft.empty:  # a store with DPO runs and no SFT run: the SFT side stays empty
        sft_pooled = pool(with_sft.rename(columns=lambda c: c.removeprefix("sft_")), by)
        pooled = pooled.merge(sft_pooled[by + ["degeneration_rate", "deg_ci95_lo", "deg_ci95_hi", "cer"]].rename(
            columns=lambda c: c if c in by else f"sft_{c}"), on=by, how="left")
    both = pd.concat([per_seed[SWEEP_COLS], pooled.reindex(columns=SWEEP_COLS)], ignore_index=True)
    return ordered(both, ["family", "size", "eval_set", "seed", "beta"])


def reductions(comp: pd.DataFrame) -> pd.DataFrame:
    """Per (family, size, eval_set) of the reported eval sets, DPO at the beta chosen on
    validation against SFT with the paper's relative reduction, per seed and pooled over seeds
    (from `comparisons`); every beta where none was chosen. Then per eval set a "mean" row: the
    mean over models of the pooled chosen-beta reductions where one is defined."""
    cols = ["family", "size", "eval_set", "seed", "n_seeds", "beta", "beta_chosen_on", "n_docs", "sft_deg",
            "dpo_deg", "relative_reduction", "mcnemar_p", "sft_cer", "dpo_cer"]
    if comp.empty:
        return pd.DataFrame(columns=cols)
    vs = comp[(comp["from"] == "sft") & (comp.eval_set != VALIDATION)]
    chosen = vs.beta_chosen_on.eq(VALIDATION)
    decided = chosen.groupby([vs[c] for c in KEY], dropna=False, sort=False).transform("any")
    out = vs[chosen | ~decided].rename(columns={"deg_from": "sft_deg", "deg_to": "dpo_deg", "cer_from": "sft_cer",
                                                 "cer_to": "dpo_cer"})[cols]
    means = [{"family": "mean", "eval_set": e, "seed": "pooled",  # NaNs skipped
              "relative_reduction": g[g.seed.eq("pooled") & g.beta_chosen_on.eq(VALIDATION)].relative_reduction.mean()}
             for e, g in out.groupby("eval_set", sort=False)]
    return pd.concat([out, pd.DataFrame(means, columns=cols)], ignore_index=True) \
        .astype({"n_seeds": "Int64", "n_docs": "Int64"})


def pair_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """The pair sets behind the DPO runs in `runs`, as each run recorded them in its metrics.json
    ("pairs": key, dir, stats): one row per pair set with the seeds and number of DPO runs that used
    it, then documents, candidates, degenerate (of which cut by loop-aware stopping) and good ones,
    documents with a degenerate candidate, pairs. DPO runs that recorded none are named in a warning."""
    found, missing = {}, []
    dpo = runs[runs.stage == "dpo"]
    for r in dpo.itertuples():
        f = Path(r.run_dir) / "metrics.json" if isinstance(r.run_dir, str) else None
        rec = json.loads(f.read_text()).get("pairs") if f is not None and f.is_file() else None
        if not rec:
            missing.append(r.run_id)
            continue
        stats = rec.get("stats") or {}
        row = found.setdefault(rec.get("key") or rec.get("dir"), {
            "family": r.family, "size": r.size, "key": rec.get("key"), "seeds": set(), "n_runs": 0,
            **{s: stats.get(s) for s in PAIR_STATS}})
        row["seeds"].add(r.seed)
        row["n_runs"] += 1
    if missing:
        log.warning("%d of %d DPO runs recorded no pair statistics (no \"pairs\" in their metrics.json: made "
                    "before runs recorded them, or loaded from W&B, which keeps no nested values) and are not "
                    "in the pairs table: %s", len(missing), len(dpo), ", ".join(missing))
    for row in found.values():
        row["seeds"] = ",".join(str(s) for s in sorted(row["seeds"], key=str))
    return pd.DataFrame(list(found.values()),
                        columns=["family", "size", "key", "seeds", "n_runs", *PAIR_STATS])


def teacher_loops(runs: pd.DataFrame) -> pd.DataFrame:
    """Where the teacher-loop labels sit in each SFT's training data (data.teacher_loops), as the SFT
    and DPO runs recorded them: one row per family, size, seed and share, with the label length,
    the training pages, those with loopable content and those labelled, by kind of content
    (`loopable_<kind>`, `labels_<kind>`: leader, digits, row, other). Empty without teacher loops."""
    found = {}
    for r in runs[runs.stage.isin(["sft", "dpo"])].itertuples():
        f = Path(r.run_dir) / "metrics.json" if isinstance(r.run_dir, str) else None
        rec = json.loads(f.read_text()).get("teacher_loops") if f is not None and f.is_file() else None
        if rec:
            found.setdefault((r.family, r.size, r.seed, rec.get("share")), {"family": r.family, "size": r.size, "seed": r.seed,
                **{k: rec.get(k) for k in TEACHER_COLS[3:]},
                **{f"loopable_{k}": v for k, v in sorted(rec.get("loopable_by_kind", {}).items())},
                **{f"labels_{k}": v for k, v in sorted(rec.get("labels_by_kind", {}).items())}})
    table = pd.DataFrame(list(found.values()))
    if table.empty:
        return pd.DataFrame(columns=TEACHER_COLS)
    kinds = sorted(c for c in table.columns if c.startswith(("loopable_", "labels_")))
    return table[TEACHER_COLS + kinds].fillna({k: 0 for k in kinds}).sort_values(
        ["family", "seed", "share"], key=lambda c: c.astype(str)).reset_index(drop=True)


SHARE_BAND = (0.01, 0.10)  # the paper's SFT degeneration, about 1-10% (Nanonets 1.61%, Qwen2.5-VL-3B 3.23%)


def teacher_shares(runs: pd.DataFrame, band: tuple[float, float] = SHARE_BAND) -> pd.DataFrame:
    """The teacher-loop share per family, chosen on validation runs of SFT at several shares
    (experiment=teacher-shares): the smallest share whose degeneration lies in `band`; where none
    does, the share whose rate lies nearest to it (then the smaller). One row per family, size,
    seed and share, with its degeneration (Wilson interval), CER and CER on the pages that did not
    loop; `chosen` marks the pick."""
    v = runs[(runs.stage == "sft") & (runs.eval_set == VALIDATION)].copy()
    lo, hi = band
    v["off_band"] = (lo - v.degeneration_rate).clip(lower=0) + (v.degeneration_rate - hi).clip(lower=0)
    v = v.sort_values(["family", "size", "seed", "teacher_loops"], key=lambda c: c.astype(str) if c.name != "teacher_loops" else c)
    best = v.sort_values(["off_band", "teacher_loops"], kind="stable").groupby(["family", "size", "seed"]).head(1).index
    v["chosen"] = v.index.isin(best)
    return v[["family", "size", "seed", "teacher_loops", *RATE[:-1], "cer", "cer_not_degenerate", "json_valid_rate",
              "chosen", "run_id"]].reset_index(drop=True)


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
    equal share of its batch), and with per-document predictions the batch time loops added. Model
    runs only: a reference system generates no tokens."""
    runs = runs[runs.stage != REFERENCE]
    out = runs[["family", "size", "eval_set", "seed", "stage", "beta", "n_docs", "n_degenerate", "new_tokens",
                "new_tokens_degenerate", "generate_seconds", "generate_seconds_degenerate", "run_id"]].copy()
    out["token_share_degenerate"] = out.new_tokens_degenerate / out.new_tokens
    out["seconds_share_degenerate"] = out.generate_seconds_degenerate / out.generate_seconds
    if predictions is not None:
        over = {rid: loop_overhead(g) for rid, g in predictions.groupby("run_id")}
        out["loop_overhead_seconds"] = [over.get(r, (float("nan"),) * 2)[0] for r in out.run_id]
        out["loop_overhead_share"] = [over.get(r, (float("nan"),) * 2)[1] for r in out.run_id]
    return out
