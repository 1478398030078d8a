"""Every method against loops on one figure: degeneration reduction against quality cost.

Reads the `arms` (or `mitigations`) tables that degenbench-report wrote for several experiments
(each arm compared page by page with the SFT model of its own seed and family), keeps the rows
pooled over families and seeds on one evaluation set, and draws each arm once, a row each: its
degenerate pages with their Wilson interval, then the CER cost against SFT on ordinary pages and
on pages whose truth legitimately repeats, with the paired bootstrap 95% intervals (`figure`).

    python -m degenbench.analysis.alternatives --tables results/losses/arms.csv \\
        results/rejections/arms.csv results/no_sft/arms.csv results/best_of_n/mitigations.csv --out results/alternatives
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


COLS = ["experiment", "arm", "n_runs", "n_docs", "n_degenerate", "degeneration_rate", "deg_ci95_lo", "deg_ci95_hi",
        "deg_change", "fixes", "new_loops", "mcnemar_p", "cer_ordinary", "cer_ordinary_diff", "cer_ordinary_diff_lo",
        "cer_ordinary_diff_hi", "cer_repetitive", "cer_repetitive_diff", "cer_repetitive_diff_lo",
        "cer_repetitive_diff_hi", "tokens_per_page", "seconds_per_page"]


PIPELINE = "dpo (the experiment's own objective and rejections)"


def summary(tables: list[Path], eval_set: str = "heldout") -> pd.DataFrame:
    """One row per arm, pooled over families and seeds, on `eval_set`. An arm that recurs with the
    same counts (`sft` and `dpo` of experiments sharing their artifacts) is the same runs: kept once,
    from the first table; one whose label recurs with other counts (other seeds, other pair counts)
    is another measurement and keeps its own row, named by its experiment."""
    rows = []
    for path in tables:
        t = pd.read_csv(path)
        t = t[(t.family == "all") & (t.seed.astype(str) == "pooled") & (t.eval_set == eval_set)]
        rows.append(t.assign(experiment=Path(path).parent.name))
    df = pd.concat(rows, ignore_index=True).drop_duplicates(["arm", "n_runs", "n_docs", "n_degenerate"], keep="first")
    df["arm"] = df.arm.replace({"dpo": PIPELINE})
    # within an experiment: SFT, then the pipeline's DPO, then its other arms in the table's order
    first = {"sft": 0, PIPELINE: 1}
    df = df.assign(_e=df.experiment.map({e: i for i, e in enumerate(dict.fromkeys(df.experiment))}),
                   _a=df.arm.map(first).fillna(2)).sort_values(["_e", "_a"], kind="stable")
    return df[[c for c in COLS if c in df]].reset_index(drop=True)


def figure(df: pd.DataFrame):
    """One row per arm (grouped by experiment, SFT first as the reference): degenerate pages with
    their Wilson interval, then the CER cost against SFT on ordinary and on repetitive pages with
    their paired bootstrap intervals."""
    import matplotlib.pyplot as plt

    from degenbench.analysis.figures import style

    df = df.iloc[::-1].reset_index(drop=True)  # the first arm on top
    colors = dict(zip(dict.fromkeys(df.experiment[::-1]), plt.get_cmap("tab10").colors))
    panels = [("degenerate pages (%)", "degeneration_rate", "deg_ci95_lo", "deg_ci95_hi", None),
              ("CER cost vs SFT, ordinary pages (x 100)", "cer_ordinary_diff", "cer_ordinary_diff_lo", "cer_ordinary_diff_hi", 0),
              ("CER cost vs SFT, repetitive pages (x 100)", "cer_repetitive_diff", "cer_repetitive_diff_lo",
               "cer_repetitive_diff_hi", 0)]
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(13, 0.32 * len(df) + 1.6), sharey=True)
        for ax, (title, mid, lo, hi, ref) in zip(axes, panels):
            for i, r in df.iterrows():
                y, a, b = 100 * r[mid], 100 * r[lo], 100 * r[hi]
                if pd.isna(y):
                    continue
                ax.errorbar(y, i, xerr=[[y - a], [b - y]] if pd.notna(a) else None, fmt="o", ms=4, capsize=2,
                            color=colors[r.experiment])
            sft = df[df.arm == "sft"].sort_values("n_runs")  # the line: the SFT of the most seeds
            ax.axvline(100 * sft[mid].iloc[-1] if ref is None and len(sft) else 0, color="black", lw=0.6)
            ax.set_title(title, fontsize=9)
        axes[0].set_yticks(range(len(df)), [f"{a}  ({e})" for a, e in zip(df.arm, df.experiment)], fontsize=7)
        axes[0].set_xlabel("left of the line: fewer loops than SFT")
        axes[1].set_xlabel("right of 0: reads worse than SFT")
        axes[2].set_xlabel("right of 0: reads worse than SFT")
        fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    from degenbench.analysis.figures import save
    from degenbench.analysis.report import write_tables

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", nargs="+", required=True, help="arms.csv / mitigations.csv of degenbench-report outputs")
    p.add_argument("--eval-set", default="heldout")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    df = summary([Path(t) for t in a.tables], a.eval_set)
    save(figure(df), out, "summary")
    write_tables(out, {"summary": df})  # summary.csv, .md, .tex
    print(df.to_string())


if __name__ == "__main__":
    main()
