"""Which runs are compared with which: the run keys, the DPO beta chosen on the validation set,
and paired per-document comparisons between stages.

A run is one model (family, size, stage, beta, seed) evaluated on one eval set. Runs compare
within (family, size, eval_set, seed): the same documents seen by the models of one seed. The
tests are paired: an exact McNemar test on the degenerate flags and a paired bootstrap interval
for the mean CER difference (BCa, resampling pages).

Pooled over seeds (`units` "pages within seeds (stratified)"), pages are paired only within their
seed: McNemar's exact test is then the binomial test on the discordant pairs summed over seeds
(loops fixed against loops new; the matched-pairs test stratified by seed), and the bootstrap
resamples pages within each seed, keeping every seed's page count (a percentile interval).
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from scipy.stats import bootstrap
from statsmodels.stats.contingency_tables import mcnemar

from degenbench.analysis.runs import VALIDATION, ordered

log = logging.getLogger(__name__)
KEY = ["family", "size", "eval_set", "seed"]  # runs of one key saw the same documents
RUN = ["family", "size", "eval_set", "stage", "beta", "seed"]  # one run; two rows of one are ambiguous
MODEL = ["family", "size", "seed"]  # a beta is chosen per trained chain


def relative_reduction(before: float, after: float) -> float:
    """The paper's measure of what DPO did to degeneration: (before - after) / before; e.g.
    Nanonets-OCR2-3B, SFT 1.61% -> DPO 0.20%: 0.876. NaN where nothing looped before."""
    return (before - after) / before if before else float("nan")


def check_unique(runs: pd.DataFrame) -> None:
    """Raise, naming them, where two runs share family/size/eval_set/stage/beta/seed: no table
    could say which of them it shows."""
    dup = runs[runs.duplicated(RUN, keep=False)]
    if dup.empty:
        return
    groups = "; ".join(", ".join(f"{c}={v}" for c, v in zip(RUN, k)) + f": {', '.join(g.run_id)}"
                       for k, g in dup.groupby(RUN, dropna=False, sort=False))
    raise ValueError(f"{len(dup)} runs share family/size/eval_set/stage/beta/seed with another ({groups}); "
                     "keep one run of each (filter the runs table, e.g. on max_new_tokens or run_id, or "
                     "move the stale run folders out of the store)")


def choose_beta(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (family, size, seed), the DPO beta chosen on the validation eval set: the lowest
    degeneration rate, then the lowest CER, then the lowest beta. Columns: family, size, seed,
    beta, chosen_on ("validation"), and that run's validation n_docs, n_degenerate,
    degeneration_rate, cer and run_id.

    A model with no validation runs gets no choice (a warning says how to get one): choosing on the
    pages it is then reported on would flatter it, so its tables show every beta instead."""
    check_unique(runs)
    dpo = runs[runs.stage == "dpo"]
    val = dpo[dpo.eval_set == VALIDATION].sort_values([*MODEL, "degeneration_rate", "cer", "beta"])
    chosen = val.groupby(MODEL, dropna=False, sort=True).head(1)
    out = chosen[[*MODEL, "beta", "n_docs", "n_degenerate", "degeneration_rate", "cer", "run_id"]] \
        .assign(chosen_on=VALIDATION).reset_index(drop=True)
    none = dpo[["family", "size", "seed"]].drop_duplicates().merge(out[MODEL], how="left", indicator=True)
    none = none[none._merge == "left_only"]
    if len(none):
        log.warning("no beta chosen for %s: they have no DPO runs on the validation set, and a beta "
                    "picked on the pages it is reported on would flatter it, so every beta is shown. "
                    "Run the DPO jobs with a validation split to choose one (e.g. data.validation=32 "
                    "'eval=[heldout,validation]')",
                    ", ".join(f"{r.family} {r.size} seed {r.seed}" for r in none.itertuples()))
    return out[[*MODEL, "beta", "chosen_on", "n_docs", "n_degenerate", "degeneration_rate", "cer", "run_id"]]


def mark_chosen(dpo: pd.DataFrame, choice: pd.DataFrame) -> pd.Series:
    """For DPO rows: True where the row's beta is the one chosen for its (family, size, seed)."""
    picked = set(zip(*(choice[c] for c in [*MODEL, "beta"])))
    return pd.Series([k in picked for k in zip(*(dpo[c] for c in [*MODEL, "beta"]))], index=dpo.index, dtype=bool)


def paired(a: pd.DataFrame, b: pd.DataFrame, label: str, seed: int = 0, resamples: int = 9999) -> dict:
    """Run b against run a on the same documents (per-document frames indexed by doc_id, or by
    (seed, doc_id) when seeds are pooled, with `degenerate` and `cer`): exact McNemar on the
    degenerate flags, and a paired bootstrap 95% interval for mean CER of b minus a (BCa over
    pages; pooled: percentile, pages resampled within their seed)."""
    if set(a.index) != set(b.index):
        raise ValueError(f"{label}: the two runs were evaluated on different documents "
                         f"({len(set(a.index) ^ set(b.index))} differ); compare runs of one eval set")
    b = b.loc[a.index]
    only_a = int((a.degenerate & ~b.degenerate).sum())  # looped in a, not in b: fixed
    only_b = int((~a.degenerate & b.degenerate).sum())  # new loops in b
    both = int((a.degenerate & b.degenerate).sum())
    p = mcnemar([[both, only_a], [only_b, len(a) - both - only_a - only_b]], exact=True).pvalue
    diff = (b.cer - a.cer).to_numpy()
    pooled = a.index.nlevels > 1
    lo, hi = (_stratified_ci(diff, a.index.get_level_values(0).to_numpy(), seed, resamples) if pooled
              else _mean_ci(diff, seed, resamples))
    return {"units": "pages within seeds (stratified)" if pooled else "pages", "n_docs": len(a), "loops_fixed": only_a, "loops_new": only_b, "loops_both": both,
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


def _stratified_ci(diff: np.ndarray, strata: np.ndarray, seed: int, resamples: int) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean, resampling within each stratum (seed)."""
    if len(diff) == 0:
        return float("nan"), float("nan")
    if np.ptp(diff) <= 1e-12:
        return float(diff[0]), float(diff[0])
    rng, total = np.random.default_rng(seed), np.zeros(resamples)
    for s in pd.unique(strata):
        d = diff[strata == s]
        total += d[rng.integers(0, len(d), (resamples, len(d)))].sum(axis=1)
    lo, hi = np.percentile(total / len(diff), [2.5, 97.5])
    return float(lo), float(hi)


def _rates(rows: list) -> dict:
    """Pooled run-level numbers of the `from` and `to` runs: summed counts, doc-weighted CER."""
    out = {}
    for side, i in (("from", 0), ("to", 1)):
        n = sum(r[i].n_docs for r in rows)
        out[f"deg_{side}"] = sum(r[i].n_degenerate for r in rows) / n if n else float("nan")
        out[f"cer_{side}"] = sum(r[i].cer * r[i].n_docs for r in rows) / n if n else float("nan")
    return out


def comparisons(runs: pd.DataFrame, predictions: pd.DataFrame, seed: int = 0,
                choice: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (family, size, eval_set, seed): vanilla -> SFT, and SFT -> DPO at each beta, paired by
    document within the seed. `beta_chosen_on` is "validation" on SFT -> DPO rows at the beta
    chosen for that seed (`choose_beta`, or `choice` if given).

    Then rows with seed "pooled" (n_seeds: how many seeds) pool the seeds of each step and beta,
    and, for the chosen betas (which may differ between seeds), one more pooled row marked
    "validation" whose beta is NaN where the seeds chose different ones. Pooled rows pair pages
    within their seed (`units`: see the module docstring): McNemar on the discordant pairs summed
    over seeds, the bootstrap resampling pages within each seed (a page evaluated in two seeds is
    two units). deg_*/cer_* of pooled rows: summed counts, doc-weighted CER."""
    check_unique(runs)
    choice = choose_beta(runs) if choice is None else choice
    per_doc = {rid: g.set_index("doc_id")[["degenerate", "cer"]] for rid, g in predictions.groupby("run_id")}
    runs = runs.assign(_chosen=False)
    dpo = runs.stage == "dpo"
    runs.loc[dpo, "_chosen"] = mark_chosen(runs[dpo], choice)
    out, units = [], []
    for key, g in runs.groupby(KEY, dropna=False, sort=False):
        by = {s: g[g.stage == s] for s in ("vanilla", "sft", "dpo")}  # one run each, checked above
        steps = []
        if len(by["vanilla"]) and len(by["sft"]):
            steps.append(("vanilla", by["vanilla"].iloc[0], by["sft"].iloc[0]))
        if len(by["sft"]):
            steps += [("sft", by["sft"].iloc[0], d) for _, d in by["dpo"].iterrows()]
        elif len(by["dpo"]) and key[2] != VALIDATION:  # validation may hold DPO runs only: it chooses beta
            log.warning("%s: no finished SFT run to compare its DPO runs with; run stage=sft", key)
        for before, a, b in steps:
            if a.run_id not in per_doc or b.run_id not in per_doc:
                log.warning("%s: no predictions for %s or %s; left out", key, a.run_id, b.run_id)
                continue
            chosen = VALIDATION if b["_chosen"] else None
            out.append({**dict(zip(KEY, key)), "n_seeds": 1, "from": before, "to": b.stage, "beta": b.beta,
                        "beta_chosen_on": chosen, **_rates([(a, b)]),
                        "relative_reduction": relative_reduction(a.degeneration_rate, b.degeneration_rate),
                        **paired(per_doc[a.run_id], per_doc[b.run_id], f"{a.run_id} vs {b.run_id}", seed)})
            units.append((a, b, chosen))
    if not out:
        return pd.DataFrame(out)
    both = pd.concat([pd.DataFrame(out), _pooled(units, per_doc, seed)], ignore_index=True)
    return ordered(both.assign(stage=both["from"]),  # steps in pipeline order, pooled rows after the seeds
                   ["family", "size", "eval_set", "seed", "stage", "beta", "beta_chosen_on"]).drop(columns="stage")


def _pooled(units: list, per_doc: dict, seed: int) -> pd.DataFrame:
    """The pooled rows of `comparisons`: per step and beta, and per step at the chosen betas."""
    groups: dict = {}
    for a, b, chosen in units:
        base = (b.family, b["size"], b.eval_set, a.stage, b.stage)
        beta = b.beta if pd.notna(b.beta) else None  # NaN keys never match one another
        groups.setdefault((*base, beta, None), []).append((a, b))
        if chosen:
            groups.setdefault((*base, "chosen", VALIDATION), []).append((a, b))
    out = []
    for (family, size, eval_set, before, after, beta, chosen), pairs in groups.items():
        betas = {b.beta for _, b in pairs}
        stack = lambda side: pd.concat({r[side].seed: per_doc[r[side].run_id] for r in pairs},  # noqa: E731
                                       names=["seed", "doc_id"])
        r = _rates(pairs)
        out.append({"family": family, "size": size, "eval_set": eval_set, "seed": "pooled",
                    "n_seeds": len(pairs), "from": before, "to": after,
                    "beta": betas.pop() if len(betas) == 1 else float("nan"), "beta_chosen_on": chosen, **r,
                    "relative_reduction": relative_reduction(r["deg_from"], r["deg_to"]),
                    **paired(stack(0), stack(1), f"{family} {size} {eval_set} {before}->{after} pooled", seed)})
    return pd.DataFrame(out)
