"""Paper figures (matplotlib): each function takes tables from `runs` / `tables` and returns a
Figure; `save` writes it as PNG and PDF. With several seeds they draw the pooled rows (seed
"pooled"), with several sizes one entry per family and size, and DPO at the beta chosen on the
validation set (no DPO bar for a model where none was chosen).

  degeneration   degenerate outputs by family x stage, Wilson 95% whiskers (the paper's Figure 1);
                 one panel per reported eval set
  beta           DPO beta against degeneration and CER, SFT as the reference point; one row of
                 panels per eval set (validation included: the beta is chosen there)
  lengths        output lengths per stage: the pile-up at the token limit is the loops (first
                 reported eval set: heldout where there is one)
  cost           tokens and seconds spent on degenerate outputs per family x stage (same eval set)
  dpo_curves     DPO training: log-probability of chosen and rejected answers per step
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

from degenbench import io
from degenbench.analysis.runs import VALIDATION, sort_key
from degenbench.config import STAGES

LABELS = {"qwen2.5-vl-3b": "Qwen2.5-VL-3B", "qwen2.5-vl-7b": "Qwen2.5-VL-7B",
          "nanonets-ocr2-3b": "Nanonets-OCR2-3B", "olmocr-2-7b": "olmOCR-2-7B", "gemma-3-4b": "Gemma-3-4B"}
ORDER = list(LABELS)  # the paper's order
STAGE_LABELS = {"vanilla": "vanilla", "sft": "SFT", "dpo": "DPO (β chosen on validation)"}
STAGE_COLORS = {"vanilla": "#9e9e9e", "sft": "#d95f02", "dpo": "#1b9e77"}
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5,
         "savefig.bbox": "tight", "savefig.dpi": 200, "pdf.fonttype": 42}


@contextmanager
def style():
    with plt.rc_context(STYLE):
        yield


def families(df: pd.DataFrame) -> list[str]:
    """The families present, in the paper's order (unknown ones after, alphabetically)."""
    present = set(df.family)
    return [f for f in ORDER if f in present] + sorted(present - set(ORDER))


def label(family: str) -> str:
    return LABELS.get(family, family)


def models(df: pd.DataFrame) -> list[tuple]:
    """The (family, size) pairs present, families in the paper's order."""
    rank = {f: i for i, f in enumerate(families(df))}
    return sorted(set(zip(df.family, df["size"])), key=lambda m: (rank[m[0]], str(m[1])))


def model_label(m: tuple, df: pd.DataFrame) -> str:
    """The family's label, with the size where the table holds several."""
    return label(m[0]) + (f" ({m[1]})" if df["size"].nunique() > 1 else "")


def pooled(df: pd.DataFrame) -> pd.DataFrame:
    """The rows pooling the seeds (one per model even with a single seed)."""
    return df[df.seed.astype(str) == "pooled"]


def eval_sets(df: pd.DataFrame, validation: bool = False) -> list[str]:
    """The eval sets present, heldout first (validation, where kept, last)."""
    sets = pd.Series(df.eval_set.unique(), name="eval_set")
    sets = sets.iloc[sort_key(sets).argsort()].tolist()
    return [e for e in sets if validation or e != VALIDATION]


def shown(stages: pd.DataFrame) -> pd.DataFrame:
    """Stage rows a figure draws: vanilla, SFT and DPO at the beta chosen on validation (the
    reference systems' rows are the tables')."""
    return stages[stages.stage.isin(STAGES) & ((stages.stage != "dpo") | (stages.beta_chosen_on == VALIDATION))]


def _at(df: pd.DataFrame, ms: list[tuple]) -> pd.DataFrame:
    """`df`'s rows for each model in `ms`, in that order (NaN rows where one has none)."""
    return df.set_index(["family", "size"]).reindex(pd.MultiIndex.from_tuples(ms, names=["family", "size"]))


def save(fig, out_dir: str | Path, name: str) -> list[Path]:
    """`name`.png and `name`.pdf in out_dir (each written atomically)."""
    paths = []
    for ext in ("png", "pdf"):
        with io.atomic_path(Path(out_dir) / f"{name}.{ext}") as tmp, style():
            fig.savefig(tmp, format=ext)
        paths.append(Path(out_dir) / f"{name}.{ext}")
    plt.close(fig)
    return paths


def degeneration(stages: pd.DataFrame):
    """Grouped bars: degeneration (%) per model for vanilla, SFT and DPO at the chosen beta, pooled
    over seeds; one panel per reported eval set."""
    st = shown(pooled(stages))
    sets, ms = eval_sets(st) or [None], models(st)
    width = 0.26
    with style():
        fig, axes = plt.subplots(len(sets), 1, figsize=(7.0, 3.0 * len(sets)), squeeze=False)
        for ax, e in zip(axes[:, 0], sets):
            x = np.arange(len(ms))
            for i, s in enumerate(STAGES):
                d = _at(st[(st.eval_set == e) & (st.stage == s)], ms)
                rate = 100 * d.degeneration_rate
                err = np.vstack([rate - 100 * d.deg_ci95_lo, 100 * d.deg_ci95_hi - rate])
                ax.bar(x + (i - 1) * width, rate, width, yerr=err, capsize=2, color=STAGE_COLORS[s],
                       label=STAGE_LABELS[s], error_kw={"elinewidth": 0.8, "capthick": 0.8})
                for xi, (k, top) in enumerate(zip(d.n_degenerate, 100 * d.deg_ci95_hi)):
                    if pd.notna(k):  # the count above the whisker: readable at any bar height
                        ax.text(x[xi] + (i - 1) * width, top, f"{int(k)}", ha="center", va="bottom", fontsize=6.5)
            ax.set_xticks(x, [model_label(m, st) for m in ms])
            ax.set_ylabel("degenerate outputs (%)")
            here = st[st.eval_set == e]
            seeds = int(here.n_seeds.max()) if len(here) else 0
            ax.set_title(f"Degenerate outputs by family and stage ({e})")
            ax.set_xlabel(f"{int(here.n_docs.max()) if len(here) else 0} pages per bar"
                          + (f" ({seeds} seeds pooled)" if seeds > 1 else "")
                          + "; above each bar: count of degenerate outputs; whiskers: Wilson 95% interval; "
                          "no DPO bar: no β chosen (no validation runs)", fontsize=7, color="0.3")
            ax.legend(frameon=False, ncols=3, loc="upper left")
            top = here.deg_ci95_hi.max() if len(here) else 0
            ax.set_ylim(0, max(1.0, float(100 * top) if pd.notna(top) else 1.0) * 1.25)
        fig.tight_layout()
    return fig


def beta(sweep: pd.DataFrame):
    """Per eval set, two panels over x = SFT, then each beta: degeneration (%) with whiskers, and
    mean CER, pooled over seeds."""
    sw = pooled(sweep)
    sets, ms = eval_sets(sw, validation=True) or [None], models(sw)
    betas = sorted(sw.beta.dropna().unique())
    ticks = ["SFT"] + [f"β={b:g}" for b in betas]
    with style():
        fig, axes = plt.subplots(len(sets), 2, figsize=(7.0, 2.8 * len(sets)), squeeze=False)
        cmap = plt.get_cmap("tab10")
        for (a1, a2), e in zip(axes, sets):
            for j, m in enumerate(ms):
                d = sw[(sw.eval_set == e) & (sw.family == m[0]) & (sw["size"] == m[1])]
                d = d.set_index("beta").reindex(betas)
                off = (j - (len(ms) - 1) / 2) * 0.05  # small dodge so whiskers do not overlap
                x = np.arange(len(ticks)) + off
                rate = np.r_[d.sft_degeneration_rate.dropna().iloc[:1], d.degeneration_rate] * 100
                lo = np.r_[d.sft_deg_ci95_lo.dropna().iloc[:1], d.deg_ci95_lo] * 100
                hi = np.r_[d.sft_deg_ci95_hi.dropna().iloc[:1], d.deg_ci95_hi] * 100
                if len(rate) < len(x):  # no SFT run beside this model's DPO runs: no SFT point
                    rate, lo, hi = (np.r_[np.nan, v] for v in (rate, lo, hi))
                a1.errorbar(x, rate, yerr=[rate - lo, hi - rate], marker="o", ms=3.5, lw=1, capsize=2,
                            color=cmap(j % 10), label=model_label(m, sw))
                cer = np.r_[d.sft_cer.dropna().iloc[:1], d.cer]
                a2.plot(x, cer if len(cer) == len(x) else np.r_[np.nan, cer], marker="o", ms=3.5, lw=1,
                        color=cmap(j % 10))
            for ax, yl in ((a1, "degenerate outputs (%)"), (a2, "mean CER")):
                ax.set_xticks(range(len(ticks)), ticks)
                ax.set_ylabel(yl)
                ax.set_ylim(bottom=0)
            a1.set_title(f"Degeneration after DPO, by β ({e})")
            a2.set_title(f"Character error rate after DPO, by β ({e})")
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncols=max(1, len(ms)),
                   frameon=False, bbox_to_anchor=(0.5, -0.08 / len(sets)))
        fig.tight_layout()
    return fig


def lengths(predictions: pd.DataFrame, stages: pd.DataFrame):
    """Per model, histograms of generated tokens for vanilla, SFT and DPO at the chosen beta (all
    seeds together) on the first reported eval set; the token limit is marked: outputs stacked
    against it are the ones that never stopped."""
    st = shown(pooled(stages))
    e = (eval_sets(st) or [None])[0]
    st = st[st.eval_set == e]
    ms = models(st)
    limit = st["max_new_tokens"].max() if "max_new_tokens" in st else np.nan
    limit = int(limit) if pd.notna(limit) else max(1, int(predictions.new_tokens.max()))  # no model rows
    bins = np.linspace(0, limit, 21)
    with style():
        fig, axes = plt.subplots(1, max(1, len(ms)), figsize=(1.6 * max(1, len(ms)) + 0.6, 2.6), sharey=True,
                                 squeeze=False)
        for ax, m in zip(axes[0], ms):
            for s in STAGES:
                run = st[(st.family == m[0]) & (st["size"] == m[1]) & (st.stage == s)]
                if run.empty:
                    continue
                ids = run.run_id.iloc[0].split(",")  # a pooled row lists its runs
                toks = predictions.loc[predictions.run_id.isin(ids), "new_tokens"]
                ax.hist(toks, bins=bins, histtype="step", lw=1.2, color=STAGE_COLORS[s], label=STAGE_LABELS[s])
            ax.axvline(limit, color="black", ls=":", lw=0.8, label=f"token limit ({limit})")
            ax.set_yscale("log")
            ax.set_title(model_label(m, st))
            ax.set_xlabel(f"generated tokens ({e})")
        axes[0][0].set_ylabel("outputs (log scale)")
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncols=4, frameon=False,
                   bbox_to_anchor=(0.5, -0.1))
        fig.tight_layout()
    return fig


def cost(cost_table: pd.DataFrame, stages: pd.DataFrame):
    """Tokens generated on degenerate outputs, and the batch time loops added (or, without
    per-document data, the seconds of degenerate rows), per model x stage (DPO at the chosen
    beta), summed over seeds, on the first reported eval set; each bar labelled with its share of
    the runs' total."""
    per_seed = shown(stages[stages.seed.astype(str) != "pooled"])
    e = (eval_sets(per_seed) or [None])[0]
    per_seed = per_seed[per_seed.eval_set == e]
    ms = models(per_seed)
    summed = ["new_tokens_degenerate", "new_tokens", "generate_seconds_degenerate", "generate_seconds",
              "loop_overhead_seconds"]
    keep = per_seed[["family", "size", "stage", "run_id"]].merge(
        cost_table[["run_id", *[c for c in summed if c in cost_table]]], on="run_id", how="left")
    keep = keep.groupby(["family", "size", "stage"], sort=False)[[c for c in summed if c in keep]] \
        .sum(min_count=1).reset_index()
    keep["token_share_degenerate"] = keep.new_tokens_degenerate / keep.new_tokens
    keep["seconds_share_degenerate"] = keep.generate_seconds_degenerate / keep.generate_seconds
    if "loop_overhead_seconds" in keep and keep.loop_overhead_seconds.notna().any():
        keep["loop_overhead_share"] = keep.loop_overhead_seconds / keep.generate_seconds
        secs = ("loop_overhead_seconds", "loop_overhead_share", "Batch time added by loops",
                "seconds (of the run's batches)")
    else:
        secs = ("generate_seconds_degenerate", "seconds_share_degenerate", "Seconds on degenerate outputs",
                "seconds (equal share of each batch)")
    width = 0.26
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.0))
        panels = (("new_tokens_degenerate", "token_share_degenerate", "Tokens on degenerate outputs", "tokens"), secs)
        for ax, (col, share, title, unit) in zip(axes, panels):
            x = np.arange(len(ms))
            for i, s in enumerate(STAGES):
                d = _at(keep[keep.stage == s], ms)
                bars = ax.bar(x + (i - 1) * width, d[col].astype(float), width, color=STAGE_COLORS[s],
                              label=STAGE_LABELS[s])
                for b, sh in zip(bars, d[share]):
                    if pd.notna(sh) and sh > 0:
                        ax.annotate(f"{100 * sh:.0f}%", (b.get_x() + b.get_width() / 2, b.get_height()),
                                    xytext=(0, 1), textcoords="offset points", ha="center", fontsize=6)
            ax.set_xticks(x, [model_label(m, per_seed) for m in ms], rotation=25, ha="right")
            ax.set_ylabel(unit)
            ax.set_ylim(bottom=0)
            ax.set_title(f"{title} ({e})\n(above each bar: share of the runs' total)", fontsize=9)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncols=3, frameon=False,
                   bbox_to_anchor=(0.5, -0.06))
        fig.tight_layout()
    return fig


def dpo_curves(training: pd.DataFrame):
    """Per model, logps of chosen (solid) and rejected (dashed) answers over DPO steps, one colour
    per beta, one line per seed: DPO should push rejected down while keeping chosen where it was."""
    dpo = training[training.trained == "dpo"] if not training.empty else training
    if not dpo.empty:  # a model evaluated on several eval sets logged the same history under each
        dpo = dpo.drop_duplicates(["family", "size", "seed", "beta", "step"])
    ms = models(dpo) if not dpo.empty else []
    with style():
        fig, axes = plt.subplots(1, max(1, len(ms)), figsize=(1.7 * max(1, len(ms)) + 0.6, 2.7),
                                 sharex=True, squeeze=False)
        if not ms:
            axes[0][0].text(0.5, 0.5, "no DPO training history in these runs", ha="center",
                            transform=axes[0][0].transAxes)
            return fig
        cmap = plt.get_cmap("viridis")
        betas = sorted(dpo.beta.dropna().unique())
        for ax, m in zip(axes[0], ms):
            for j, b in enumerate(betas):
                c = cmap(j / max(1, len(betas) - 1) * 0.85)
                here = dpo[(dpo.family == m[0]) & (dpo["size"] == m[1]) & (dpo.beta == b)]
                for k, (_, d) in enumerate(here.groupby("seed", dropna=False, sort=True)):
                    d = d.sort_values("step")
                    ax.plot(d.step, d["logps/chosen"], color=c, lw=1.2, label=f"β={b:g} chosen" if k == 0 else None)
                    ax.plot(d.step, d["logps/rejected"], color=c, lw=1.2, ls="--",
                            label=f"β={b:g} rejected" if k == 0 else None)
            ax.set_title(model_label(m, dpo))
            ax.set_xlabel("DPO step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0][0].set_ylabel("log-probability of the answer\n(sum over its tokens)")
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncols=2 * len(betas),
                   frameon=False, bbox_to_anchor=(0.5, -0.1))
        fig.tight_layout()
    return fig
