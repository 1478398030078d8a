"""Paper figures (matplotlib): each function takes tables from `runs` / `tables` and returns a
Figure; `save` writes it as PNG and PDF.

  degeneration   degenerate outputs by family x stage, Wilson 95% whiskers (the paper's Figure 1)
  beta           DPO beta against degeneration and CER, SFT as the reference point
  lengths        output lengths per stage: the pile-up at the token limit is the loops
  cost           tokens and seconds spent on degenerate outputs per family x stage
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
from degenbench.config import STAGES

LABELS = {"qwen2.5-vl-3b": "Qwen2.5-VL-3B", "qwen2.5-vl-7b": "Qwen2.5-VL-7B",
          "nanonets-ocr2-3b": "Nanonets-OCR2-3B", "olmocr-2-7b": "olmOCR-2-7B", "gemma-3-4b": "Gemma-3-4B"}
ORDER = list(LABELS)  # the paper's order
STAGE_LABELS = {"vanilla": "vanilla", "sft": "SFT", "dpo": "DPO (best β)"}
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
    """Grouped bars: degeneration (%) per family for vanilla, SFT and best-beta DPO."""
    fams, stage_names = families(stages), STAGES
    width = 0.26
    with style():
        fig, ax = plt.subplots(figsize=(7.0, 3.0))
        x = np.arange(len(fams))
        for i, s in enumerate(stage_names):
            d = stages[stages.stage == s].set_index("family").reindex(fams)
            rate = 100 * d.degeneration_rate
            err = np.vstack([rate - 100 * d.deg_ci95_lo, 100 * d.deg_ci95_hi - rate])
            ax.bar(x + (i - 1) * width, rate, width, yerr=err, capsize=2, color=STAGE_COLORS[s],
                   label=STAGE_LABELS[s], error_kw={"elinewidth": 0.8, "capthick": 0.8})
            for xi, (k, top) in enumerate(zip(d.n_degenerate, 100 * d.deg_ci95_hi)):
                if pd.notna(k):  # the count above the whisker: readable at any bar height
                    ax.text(x[xi] + (i - 1) * width, top, f"{int(k)}", ha="center", va="bottom", fontsize=6.5)
        ax.set_xticks(x, [label(f) for f in fams])
        ax.set_ylabel("degenerate outputs (%)")
        n = int(stages.n_docs.max())
        ax.set_title("Degenerate outputs by family and stage")
        ax.set_xlabel(f"{n} held-out pages per run; above each bar: count of degenerate outputs; "
                      "whiskers: Wilson 95% interval", fontsize=7, color="0.3")
        ax.legend(frameon=False, ncols=3, loc="upper left")
        ax.set_ylim(0, max(1.0, float(100 * stages.deg_ci95_hi.max())) * 1.25)
    return fig


def beta(sweep: pd.DataFrame):
    """Two panels over x = SFT, then each beta: degeneration (%) with whiskers, and mean CER."""
    fams = families(sweep)
    betas = sorted(sweep.beta.dropna().unique())
    ticks = ["SFT"] + [f"β={b:g}" for b in betas]
    with style():
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.0, 2.8))
        cmap = plt.get_cmap("tab10")
        for j, f in enumerate(fams):
            d = sweep[sweep.family == f].set_index("beta").reindex(betas)
            off = (j - (len(fams) - 1) / 2) * 0.05  # small dodge so whiskers do not overlap
            x = np.arange(len(ticks)) + off
            rate = np.r_[d.sft_degeneration_rate.dropna().iloc[:1], d.degeneration_rate] * 100
            lo = np.r_[d.sft_deg_ci95_lo.dropna().iloc[:1], d.deg_ci95_lo] * 100
            hi = np.r_[d.sft_deg_ci95_hi.dropna().iloc[:1], d.deg_ci95_hi] * 100
            a1.errorbar(x, rate, yerr=[rate - lo, hi - rate], marker="o", ms=3.5, lw=1, capsize=2,
                        color=cmap(j), label=label(f))
            a2.plot(x, np.r_[d.sft_cer.dropna().iloc[:1], d.cer], marker="o", ms=3.5, lw=1, color=cmap(j))
        for ax, yl in ((a1, "degenerate outputs (%)"), (a2, "mean CER")):
            ax.set_xticks(range(len(ticks)), ticks)
            ax.set_ylabel(yl)
            ax.set_ylim(bottom=0)
        a1.set_title("Degeneration after DPO, by β")
        a2.set_title("Character error rate after DPO, by β")
        fig.legend(*a1.get_legend_handles_labels(), loc="lower center", ncols=len(fams), frameon=False,
                   bbox_to_anchor=(0.5, -0.08))
        fig.tight_layout()
    return fig


def lengths(predictions: pd.DataFrame, stages: pd.DataFrame):
    """Per family, histograms of generated tokens for vanilla, SFT and best-beta DPO; the token
    limit is marked: outputs stacked against it are the ones that never stopped."""
    fams = families(stages)
    limit = int(stages.get("max_new_tokens", pd.Series([predictions.new_tokens.max()])).max())
    bins = np.linspace(0, limit, 21)
    with style():
        fig, axes = plt.subplots(1, len(fams), figsize=(1.6 * len(fams) + 0.6, 2.6), sharey=True, squeeze=False)
        for ax, f in zip(axes[0], fams):
            for s in STAGES:
                run = stages[(stages.family == f) & (stages.stage == s)]
                if run.empty:
                    continue
                toks = predictions.loc[predictions.run_id == run.run_id.iloc[0], "new_tokens"]
                ax.hist(toks, bins=bins, histtype="step", lw=1.2, color=STAGE_COLORS[s], label=STAGE_LABELS[s])
            ax.axvline(limit, color="black", ls=":", lw=0.8, label=f"token limit ({limit})")
            ax.set_yscale("log")
            ax.set_title(label(f))
            ax.set_xlabel("generated tokens")
        axes[0][0].set_ylabel("outputs (log scale)")
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncols=4, frameon=False,
                   bbox_to_anchor=(0.5, -0.1))
        fig.tight_layout()
    return fig


def cost(cost_table: pd.DataFrame, stages: pd.DataFrame):
    """Tokens generated on degenerate outputs, and the batch time loops added (or, without
    per-document data, the seconds of degenerate rows), per family x stage (best-beta DPO), each
    bar labelled with its share of the run's total."""
    fams = families(stages)
    keep = stages[["family", "stage", "beta"]].merge(cost_table, on=["family", "stage", "beta"], how="left")
    if "loop_overhead_seconds" in keep and keep.loop_overhead_seconds.notna().any():
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
            x = np.arange(len(fams))
            for i, s in enumerate(STAGES):
                d = keep[keep.stage == s].set_index("family").reindex(fams)
                bars = ax.bar(x + (i - 1) * width, d[col].astype(float), width, color=STAGE_COLORS[s],
                              label=STAGE_LABELS[s])
                for b, sh in zip(bars, d[share]):
                    if pd.notna(sh) and sh > 0:
                        ax.annotate(f"{100 * sh:.0f}%", (b.get_x() + b.get_width() / 2, b.get_height()),
                                    xytext=(0, 1), textcoords="offset points", ha="center", fontsize=6)
            ax.set_xticks(x, [label(f) for f in fams], rotation=25, ha="right")
            ax.set_ylabel(unit)
            ax.set_ylim(bottom=0)
            ax.set_title(f"{title}\n(above each bar: share of the run's total)", fontsize=9)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncols=3, frameon=False,
                   bbox_to_anchor=(0.5, -0.06))
        fig.tight_layout()
    return fig


def dpo_curves(training: pd.DataFrame):
    """Per family, logps of chosen (solid) and rejected (dashed) answers over DPO steps, one colour
    per beta: DPO should push rejected down while keeping chosen where it was."""
    dpo = training[training.trained == "dpo"] if not training.empty else training
    fams = families(dpo) if not dpo.empty else []
    with style():
        fig, axes = plt.subplots(1, max(1, len(fams)), figsize=(1.7 * max(1, len(fams)) + 0.6, 2.7),
                                 sharex=True, squeeze=False)
        if not fams:
            axes[0][0].text(0.5, 0.5, "no DPO training history in these runs", ha="center",
                            transform=axes[0][0].transAxes)
            return fig
        cmap = plt.get_cmap("viridis")
        betas = sorted(dpo.beta.dropna().unique())
        for ax, f in zip(axes[0], fams):
            for j, b in enumerate(betas):
                d = dpo[(dpo.family == f) & (dpo.beta == b)].sort_values("step")
                c = cmap(j / max(1, len(betas) - 1) * 0.85)
                ax.plot(d.step, d["logps/chosen"], color=c, lw=1.2, label=f"β={b:g} chosen")
                ax.plot(d.step, d["logps/rejected"], color=c, lw=1.2, ls="--", label=f"β={b:g} rejected")
            ax.set_title(label(f))
            ax.set_xlabel("DPO step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0][0].set_ylabel("log-probability of the answer\n(sum over its tokens)")
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncols=2 * len(betas),
                   frameon=False, bbox_to_anchor=(0.5, -0.1))
        fig.tight_layout()
    return fig
