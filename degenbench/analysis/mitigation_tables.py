"""Decode-time mitigations against DPO, on the same pages (conf/experiment/mitigations.yaml).

Every arm is compared with the SFT model decoded as the benchmark decodes (mitigation `none`),
page by page within (family, size, eval set, seed): each mitigation on the SFT model, DPO without
one (its beta chosen on validation, or its only beta), and DPO with each mitigation.

  fixes      pages degenerate under SFT + none that the arm ends
  leaves     pages degenerate under both
  breaks     pages not degenerate under SFT + none that the arm makes degenerate, or reads worse
             (CER higher by more than `EPS`)
  improves   pages not degenerate under either that the arm reads better (CER lower by > EPS)

CER is reported on ordinary pages and on pages whose truth legitimately repeats (`repetitive`),
each with a paired bootstrap 95% interval of its difference from SFT + none; tokens and seconds
per page count every attempt. Rows with seed "pooled" pool seeds (and `family` "all" pools the
families): pages are paired within their run, the bootstrap resamples within each (family, seed).

`audit`: the degeneration rule's and LoopStop's false positives on the repetitive pages, per
family, stage and mitigation (see its docstring).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from degenbench.analysis.compare import _mean_ci, _stratified_ci, mark_chosen
from degenbench.analysis.runs import ordered, pipeline_training
from degenbench.documents.evalsets import split_budget
from degenbench.metrics.degeneration import is_degenerate
from degenbench.metrics.stats import wilson

README = ("`mitigations`: each decode-time mitigation on the SFT model, DPO, and DPO with each, against SFT "
          "decoded as the benchmark decodes (`none`), page by page: `fixes` (loops it ends), `leaves`, `breaks` "
          "(new loops, or CER up by more than 0.01), `improves`; CER on ordinary and on repetitive pages with the "
          "paired bootstrap 95% interval of the difference; tokens and seconds per page counting every attempt. "
          "`mitigation_audit`: the rule's and LoopStop's false positives on repetitive pages (degenbench/analysis/"
          "mitigations.py says how each is counted).\n")
EPS = 0.01
FP_CER = 0.5  # a CER change smaller than this is no change (one character in a hundred)
BASE = ("sft", "none")
PER_DOC = ["doc_id", "degenerate", "cer", "repetitive", "new_tokens_all", "seconds_all", "attempts", "hit_limit",
           "loop_stopped", "prediction", "attempt_outputs"]


def rule_of(runs: pd.DataFrame) -> dict:
    """The degeneration rule's settings the runs were scored with (their config.yaml)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    m = OmegaConf.load(Path(runs.run_dir.dropna().iloc[0]) / "config.yaml").metrics
    return {"tail_chars": int(m.tail_chars), "min_repeats": int(m.min_repeats)}


def arm(stage: str, mitigation: str, training: str = "", pipeline: str = "") -> str:
    """An arm's name: the stage, its training where not the pipeline's (`dpo[kto]`), the mitigation."""
    name = f"{stage}[{training}]" if training and training != pipeline else stage
    return name if mitigation == "none" else f"{name} + {mitigation}"


def _pipeline(runs: pd.DataFrame) -> str:
    dpo = runs[(runs.stage == "dpo") & pipeline_training(runs)]
    return dpo.training.iloc[0] if len(dpo) else ""


def _frames(runs: pd.DataFrame, preds: pd.DataFrame) -> dict:
    """run_id -> its per-document frame (doc_id index); runs made before mitigations get their columns."""
    preds = preds.assign(**{c: preds.get(c) for c in ("repetitive", "attempts") if c not in preds})
    preds["repetitive"] = preds.repetitive.fillna(False).astype(bool)
    preds["attempts"] = preds.attempts.fillna(1).astype(int)
    for c, old in (("new_tokens_all", "new_tokens"), ("seconds_all", "seconds")):
        if c not in preds:
            preds[c] = preds[old]
        elif old in preds:
            preds[c] = preds[c].fillna(preds[old])
    cols = [c for c in PER_DOC if c in preds]
    return {rid: g[cols].set_index("doc_id") for rid, g in preds[preds.run_id.isin(runs.run_id)].groupby("run_id")}


def _shown(runs: pd.DataFrame, choice: pd.DataFrame | None, k_budgets: bool = False) -> pd.DataFrame:
    """The model runs of the reported sets (not validation; at 1x the budget unless `k_budgets`):
    SFT, and DPO at its chosen beta (every beta where none was chosen)."""
    runs = runs[runs.stage.isin(["sft", "dpo"]) & (runs.eval_set != "validation")]
    if "training" not in runs:
        runs = runs.assign(training="")
    if not k_budgets:
        runs = runs[runs.eval_set.map(lambda e: split_budget(e)[1] == 1)]
    dpo = runs.stage == "dpo"
    if dpo.any() and choice is not None and len(choice):  # the beta chosen for the pipeline's DPO, for every arm
        keep = mark_chosen(runs[dpo], choice)
        keep |= ~runs[dpo].set_index(["family", "size", "seed"]).index.isin(
            choice.set_index(["family", "size", "seed"]).index)
        runs = pd.concat([runs[~dpo], runs[dpo][keep.to_numpy()]])
    return runs


def _row(a: pd.DataFrame, b: pd.DataFrame, strata: np.ndarray | None, seed: int) -> dict:
    """Arm b against SFT + none (a) on the same pages."""
    b = b.loc[a.index]
    fixes = int((a.degenerate & ~b.degenerate).sum())
    leaves = int((a.degenerate & b.degenerate).sum())
    ok = ~a.degenerate
    breaks = int((ok & (b.degenerate | (b.cer > a.cer + EPS))).sum())
    improves = int((ok & ~b.degenerate & (b.cer < a.cer - EPS)).sum())
    n, k = len(b), int(b.degenerate.sum())
    lo, hi = wilson(k, n)
    out = {"n_docs": n, "n_degenerate": k, "degeneration_rate": k / n if n else np.nan, "deg_ci95_lo": lo,
           "deg_ci95_hi": hi, "deg_change": (k - int(a.degenerate.sum())) / n if n else np.nan,
           "fixes": fixes, "leaves": leaves, "breaks": breaks, "improves": improves}
    for part, mask in (("ordinary", ~a.repetitive), ("repetitive", a.repetitive)):
        d = (b.cer - a.cer)[mask].to_numpy()
        ci = _stratified_ci(d, strata[mask.to_numpy()], seed, 2999) if strata is not None else _mean_ci(d, seed, 2999)
        out |= {f"n_{part}": int(mask.sum()), f"cer_{part}": float(b.cer[mask].mean()) if mask.any() else np.nan,
                f"cer_{part}_diff": float(d.mean()) if len(d) else np.nan,
                f"cer_{part}_diff_lo": ci[0], f"cer_{part}_diff_hi": ci[1]}
    new = int((ok & b.degenerate).sum())  # loops the arm has where SFT had none
    p = binomtest(fixes, fixes + new).pvalue if fixes + new else 1.0  # exact McNemar (summed over seeds when pooled)
    out |= {"new_loops": new, "mcnemar_p": p}
    return out | {"tokens_per_page": float(b.new_tokens_all.mean()), "seconds_per_page": float(b.seconds_all.mean()),
                  "retried": int((b.attempts > 1).sum()), "attempts_per_page": float(b.attempts.mean())}


def table(runs: pd.DataFrame, preds: pd.DataFrame, choice: pd.DataFrame | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per arm and (family, size, eval set, seed), then pooled over seeds, then over
    families; every reported eval set, at every budget (`heldout@4x`: loops that need more room)."""
    runs = _shown(runs, choice, k_budgets=True)
    pipeline = _pipeline(runs)
    frames = _frames(runs, preds)
    units = []  # (family, size, eval_set, seed, arm, base frame, arm frame)
    for (family, size, eval_set, s), g in runs.groupby(["family", "size", "eval_set", "seed"], sort=False):
        base = g[(g.stage == "sft") & (g.mitigation == "none") & (g.training.fillna("") == "")]
        if base.empty:
            continue
        a = frames[base.run_id.iloc[0]]
        for r in g.itertuples():
            units.append((family, size, eval_set, s, arm(r.stage, r.mitigation, r.training or "", pipeline),
                          r.mitigation, a, frames[r.run_id]))
    out = [{"family": f, "size": z, "eval_set": e, "seed": s, "arm": name, "mitigation": m, **_row(a, b, None, seed)}
           for f, z, e, s, name, m, a, b in units]
    for by, fam in ((lambda u: (u[0], u[1], u[2], u[4]), None), (lambda u: ("all", u[1], u[2], u[4]), "all")):
        groups: dict = {}
        for u in units:
            groups.setdefault(by(u), []).append(u)
        for (f, z, e, name), us in groups.items():
            a = pd.concat([u[6] for u in us], keys=[f"{u[0]}/{u[3]}" for u in us], names=["unit", "doc_id"])
            b = pd.concat([u[7].loc[u[6].index] for u in us], keys=[f"{u[0]}/{u[3]}" for u in us], names=["unit", "doc_id"])
            strata = a.index.get_level_values(0).to_numpy()
            out.append({"family": f, "size": z, "eval_set": e, "seed": "pooled", "arm": name, "mitigation": us[0][5],
                        "n_runs": len(us), **_row(a, b, strata, seed)})
    df = pd.DataFrame(out)
    if df.empty:
        return df
    df["stage"] = df.arm.str.split(" ").str[0]
    return ordered(df, ["family", "size", "eval_set", "seed", "stage", "mitigation"]).drop(columns="stage")


def audit(runs: pd.DataFrame, preds: pd.DataFrame, rule: dict, choice: pd.DataFrame | None = None) -> pd.DataFrame:
    """False positives on the pages whose truth legitimately repeats, per family, stage and
    mitigation (seeds pooled), at 1x the budget:

      rule_flagged     outputs the degeneration rule flags (hit the limit, tail repeats)
      rule_fp          of those, pages the same model ends on its own at k x the budget (its
                       `<set>@<k>x` run) with a CER below FP_CER: a transcription that needed more
                       room, not a loop (a loop that stops later reads far worse); NA without such runs
      tail_only_fp     outputs that ended on their own whose text meets the rule's tail test: what
                       the rule would flag without its token-limit condition
      loopstop_cut     first attempts cut by LoopStop (mitigations that run it)
      loopstop_fp      of those, pages the same model without LoopStop (mitigation none) ended on
                       its own: LoopStop cut an output that would have finished
    `rule`: metrics.tail_chars and metrics.min_repeats. The same counts on ordinary pages follow
    (`*_ordinary`), for scale."""
    runs = runs[runs.stage.isin(["sft", "dpo"]) & (runs.eval_set != "validation")]
    if "training" not in runs:
        runs = runs.assign(training="")
    shown = _shown(runs, choice)
    frames = _frames(runs, preds)
    at_k = {(r.family, r.size, split_budget(r.eval_set)[0], r.seed, r.stage, r.beta if r.stage == "dpo" else None,
             r.mitigation): r.run_id for r in runs.itertuples() if split_budget(r.eval_set)[1] > 1}
    plain = {(r.family, r.size, r.eval_set, r.seed, r.stage, r.beta if r.stage == "dpo" else None): r.run_id
             for r in shown.itertuples() if r.mitigation == "none"}
    out: dict = {}
    for r in shown.itertuples():
        d = frames[r.run_id]
        beta = r.beta if r.stage == "dpo" else None
        k_run = at_k.get((r.family, r.size, r.eval_set, r.seed, r.stage, beta, r.mitigation))
        none_run = plain.get((r.family, r.size, r.eval_set, r.seed, r.stage, beta))
        first_cut = d.attempt_outputs.map(lambda a: bool(len(a) and a[0]["loop_stopped"])) \
            if "attempt_outputs" in d else d.loop_stopped.astype(bool)
        ended = ~d.hit_limit.astype(bool) & ~d.loop_stopped.astype(bool)
        tail = d.prediction.map(lambda t: is_degenerate(t, True, rule["tail_chars"], rule["min_repeats"]))
        rec = out.setdefault((r.family, r.size, r.eval_set, r.stage, r.mitigation), {"n_runs": 0})
        rec["n_runs"] += 1
        for part, mask in (("", d.repetitive), ("_ordinary", ~d.repetitive)):
            flagged = d.degenerate & mask
            rec[f"n{part or '_repetitive'}"] = rec.get(f"n{part or '_repetitive'}", 0) + int(mask.sum())
            rec[f"rule_flagged{part}"] = rec.get(f"rule_flagged{part}", 0) + int(flagged.sum())
            if k_run is not None:
                k = frames[k_run].reindex(d.index)
                read = ~k.hit_limit.fillna(True).astype(bool) & ~k.loop_stopped.fillna(False).astype(bool) \
                    & (k.cer < FP_CER)  # ended with more room, as a transcription (a loop that stops later reads > 1)
                fp = int((flagged & read).sum())
                rec[f"rule_fp{part}"] = rec.get(f"rule_fp{part}", 0) + fp
            else:
                rec[f"rule_fp{part}"] = np.nan
            rec[f"tail_only_fp{part}"] = rec.get(f"tail_only_fp{part}", 0) + int((ended & tail & mask).sum())
            cut = first_cut & mask
            rec[f"loopstop_cut{part}"] = rec.get(f"loopstop_cut{part}", 0) + int(cut.sum())
            if none_run is not None:
                n = frames[none_run].reindex(d.index)
                n_ended = ~n.hit_limit.fillna(True).astype(bool) & ~n.loop_stopped.fillna(False).astype(bool)
                rec[f"loopstop_fp{part}"] = rec.get(f"loopstop_fp{part}", 0) + int((cut & n_ended).sum())
            else:
                rec[f"loopstop_fp{part}"] = np.nan
    rows = [{"family": f, "size": z, "eval_set": e, "stage": s, "mitigation": m, **v} for (f, z, e, s, m), v in out.items()]
    return ordered(pd.DataFrame(rows), ["family", "size", "eval_set", "stage", "mitigation"]) if rows else pd.DataFrame()


def figure(tab: pd.DataFrame):
    """Degeneration reduction against quality cost, one panel per eval set: each arm a point
    (families and seeds pooled) at x = how many percentage points fewer pages degenerate than under
    SFT + none, y = its CER cost on the pages whose truth legitimately repeats (filled) and on
    ordinary pages (hollow), with the paired bootstrap 95% interval. Right: fewer loops; up: worse."""
    import matplotlib.pyplot as plt

    from degenbench.analysis.figures import style
    from degenbench.analysis.runs import sort_key

    rows = tab[(tab.seed.astype(str) == "pooled") & (tab.family == "all")]
    sets = pd.Series(rows.eval_set.unique(), name="eval_set")
    sets = sets.iloc[sort_key(sets).argsort()].tolist()
    arms = [a for a in dict.fromkeys(rows.arm) if a != "sft"]
    colors = dict(zip(arms, plt.get_cmap("tab10").colors))
    with style():
        fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets) + 1.5, 3.6), squeeze=False)
        for ax, e in zip(axes[0], sets):
            for a in arms:
                r = rows[(rows.arm == a) & (rows.eval_set == e)]
                if r.empty:
                    continue
                r = r.iloc[0]
                for part, face in (("repetitive", colors[a]), ("ordinary", "none")):
                    y, lo, hi = (100 * r[f"cer_{part}_diff{x}"] for x in ("", "_lo", "_hi"))
                    if pd.isna(y):
                        continue
                    ax.errorbar(-100 * r.deg_change, y, yerr=[[y - lo], [hi - y]], fmt="o", color=colors[a],
                                mfc=face, capsize=3, label=a if part == "repetitive" else None)
            ax.axhline(0, color="black", lw=0.6)
            ax.axvline(0, color="black", lw=0.6)
            ax.set_title(e)
            ax.set_xlabel("fewer degenerate pages than SFT (points)")
        axes[0][0].set_ylabel("CER cost vs SFT (x 100)\nfilled: repetitive pages, hollow: ordinary")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.tight_layout()
    return fig
