"""Do loops persist with more room? Each model's pages at 1x the token budget against the same
pages at k times it (the eval set `<set>@<k>x`, degenbench/documents/evalsets.py).

A page is degenerate when its output hit the token limit and its tail repeats (the paper's rule):
at 1x some of those are long outputs that were cut while repeating and would have ended, others
are loops. Evaluating the same model on the same pages with k times the budget tells them apart:
a page still degenerate at kx persisted (a loop that does not end), one that is not recovered. A
page degenerate only at kx is new (a longer output's tail then repeats).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from degenbench.analysis.compare import check_unique, choose_beta, mark_chosen
from degenbench.analysis.runs import ordered
from degenbench.documents.evalsets import split_budget
from degenbench.metrics.stats import wilson

log = logging.getLogger(__name__)
GROUP = ["family", "size", "eval_set", "budget", "stage", "beta"]  # eval_set: the base set (1x)
COUNTS = ["n_docs", "n_degenerate_1x", "n_persist", "n_recovered", "n_new", "n_degenerate_kx"]
COLS = [*GROUP[:3], "seed", "n_seeds", *GROUP[3:], "chosen", "max_new_tokens_1x", "max_new_tokens_kx", *COUNTS,
        "persist_share", "persist_ci95_lo", "persist_ci95_hi", "deg_rate_1x", "deg_rate_kx", "run_id_1x", "run_id_kx"]


def persistence(runs: pd.DataFrame, predictions: pd.DataFrame, choice: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model (family, size, stage, beta, seed) evaluated on a base set and on it at k times
    the budget: pages degenerate at 1x (n_degenerate_1x), of them still degenerate at kx
    (n_persist, with persist_share and its Wilson 95% interval) or not (n_recovered), pages
    degenerate only at kx (n_new), and the degeneration rate at each budget; pages matched by
    doc_id. Rows with seed "pooled" sum the counts over seeds (n_seeds). `chosen`: DPO at the beta
    chosen on validation (`choice`, from compare.choose_beta). Columns: COLS."""
    check_unique(runs)
    parsed = [split_budget(e) for e in runs.eval_set]
    runs = runs.assign(base=[b for b, _ in parsed], budget=[k for _, k in parsed])
    choice = choose_beta(runs) if choice is None else choice
    runs = runs.assign(chosen=runs.stage.eq("dpo") & mark_chosen(runs, choice))
    beta = lambda b: None if pd.isna(b) else float(b)  # noqa: E731  NaN never equals NaN
    at_1x = {(r.family, r.size, r.base, r.stage, beta(r.beta), r.seed): r
             for r in runs[runs.budget == 1].itertuples()}
    flags = {rid: g.set_index("doc_id").degenerate.astype(bool) for rid, g in predictions.groupby("run_id")}
    out = []
    for r in runs[runs.budget != 1].itertuples():
        one = at_1x.get((r.family, r.size, r.base, r.stage, beta(r.beta), r.seed))
        if one is None or one.run_id not in flags or r.run_id not in flags:
            log.warning("%s: no run (or no predictions) of the same model on %s at 1x to compare with; left out",
                        r.run_id, r.base)
            continue
        a, b = flags[one.run_id], flags[r.run_id]
        if set(a.index) != set(b.index):
            raise ValueError(f"{one.run_id} and {r.run_id} were evaluated on different documents "
                             f"({len(set(a.index) ^ set(b.index))} differ)")
        b = b.loc[a.index]
        out.append({"family": r.family, "size": r.size, "eval_set": r.base, "seed": r.seed, "n_seeds": 1,
                    "budget": r.budget, "stage": r.stage, "beta": r.beta, "chosen": bool(r.chosen),
                    "max_new_tokens_1x": one.max_new_tokens, "max_new_tokens_kx": r.max_new_tokens,
                    "n_docs": len(a), "n_degenerate_1x": int(a.sum()), "n_persist": int((a & b).sum()),
                    "n_recovered": int((a & ~b).sum()), "n_new": int((~a & b).sum()),
                    "n_degenerate_kx": int(b.sum()), "run_id_1x": one.run_id, "run_id_kx": r.run_id})
    if not out:
        return pd.DataFrame(columns=COLS)
    per_seed = pd.DataFrame(out)
    pooled = [{**dict(zip(GROUP, key)), "seed": "pooled", "n_seeds": len(g), "chosen": bool(g.chosen.all()),
               "max_new_tokens_1x": g.max_new_tokens_1x.max(), "max_new_tokens_kx": g.max_new_tokens_kx.max(),
               **{c: int(g[c].sum()) for c in COUNTS},
               "run_id_1x": ",".join(g.run_id_1x), "run_id_kx": ",".join(g.run_id_kx)}
              for key, g in per_seed.groupby(GROUP, dropna=False, sort=False)]
    both = pd.concat([per_seed, pd.DataFrame(pooled)], ignore_index=True)
    share = [wilson(k, n) for k, n in zip(both.n_persist, both.n_degenerate_1x)]
    both = both.assign(persist_share=np.where(both.n_degenerate_1x > 0, both.n_persist / both.n_degenerate_1x.clip(lower=1),
                                              np.nan),
                       persist_ci95_lo=[lo for lo, _ in share], persist_ci95_hi=[hi for _, hi in share],
                       deg_rate_1x=both.n_degenerate_1x / both.n_docs, deg_rate_kx=both.n_degenerate_kx / both.n_docs)
    return ordered(both[COLS], ["family", "size", "eval_set", "budget", "stage", "beta", "seed"])
