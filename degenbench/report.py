"""Comparison tables from finished runs: one row per (family, stage, beta), with Wilson intervals,
the exact McNemar test of each DPO run against its family's SFT run on the same documents, and
the preference-pair statistics.

    python -m degenbench.report [--runs results/runs] [--artifacts results/artifacts] --out results/toy
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path

import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar

from degenbench import io
from degenbench.stages.store import COMPLETE

log = logging.getLogger(__name__)
STAGE_ORDER = {"vanilla": 0, "sft": 1, "dpo": 2}


def runs_table(runs_dir: str | Path) -> pd.DataFrame:
    """One row per finished run (metrics.json of every run with a completion marker)."""
    rows = []
    for d in sorted(Path(runs_dir).iterdir()):
        if (d / COMPLETE).exists() and (d / "metrics.json").exists():
            m = json.loads((d / "metrics.json").read_text())
            lo, hi = m["degeneration_ci95"]
            rows.append({"family": m["family"], "size": m["size"], "stage": m["stage"], "beta": m["beta"],
                         "n_docs": m["n_docs"], "n_degenerate": m["n_degenerate"],
                         "degeneration_rate": m["degeneration_rate"], "deg_ci95_lo": lo, "deg_ci95_hi": hi,
                         "cer": m["cer"], "score": m["score"], "json_valid_rate": m["json_valid_rate"],
                         "dpo_skipped": bool(m.get("dpo_skipped")), "run_id": m["run_id"], "run_dir": str(d)})
    if not rows:
        raise FileNotFoundError(f"no finished runs under {runs_dir}: run `degenbench experiment=toy` first")
    df = pd.DataFrame(rows)
    return df.sort_values(["family", "stage", "beta"], key=lambda s: s.map(STAGE_ORDER) if s.name == "stage"
                          else s, na_position="first").reset_index(drop=True)


def _per_doc(run_dir: str) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / "predictions.parquet", columns=["doc_id", "degenerate", "cer"]) \
        .set_index("doc_id")


def versus_sft(table: pd.DataFrame) -> pd.DataFrame:
    """Each DPO run against its family's SFT run, paired by document: exact McNemar p-value on the
    degenerate flags, discordant counts, and the relative change in degeneration and CER."""
    out = []
    for _, dpo in table[table.stage == "dpo"].iterrows():
        sft = table[(table.stage == "sft") & (table.family == dpo.family) & (table["size"] == dpo["size"])]
        if sft.empty:  # said, not dropped silently: the runs table still lists the DPO run
            log.warning("%s: no finished SFT run of %s to compare with; run stage=sft", dpo.run_id, dpo.family)
            continue
        s = sft.iloc[0]
        a, b = _per_doc(s.run_dir), _per_doc(dpo.run_dir)
        if set(a.index) != set(b.index):
            raise ValueError(f"{dpo.run_id} and {s.run_id} were evaluated on different documents")
        b = b.loc[a.index]
        only_sft = int((a.degenerate & ~b.degenerate).sum())  # looped after SFT, not after DPO
        only_dpo = int((~a.degenerate & b.degenerate).sum())
        both = int((a.degenerate & b.degenerate).sum())
        p = mcnemar([[both, only_sft], [only_dpo, len(a) - both - only_sft - only_dpo]], exact=True).pvalue
        out.append({"family": dpo.family, "beta": dpo.beta, "sft_deg": s.degeneration_rate,
                    "dpo_deg": dpo.degeneration_rate,
                    "deg_rel_change": -relative_reduction(s.degeneration_rate, dpo.degeneration_rate),
                    "loops_fixed": only_sft, "loops_new": only_dpo, "mcnemar_p": float(p),
                    "sft_cer": s.cer, "dpo_cer": dpo.cer, "cer_rel_change": (dpo.cer - s.cer) / s.cer})
    return pd.DataFrame(out)


def relative_reduction(before: float, after: float) -> float:
    """The paper's measure of what DPO did to degeneration: (before - after) / before; e.g.
    Nanonets-OCR2-3B, SFT 1.61% -> DPO 0.20%: 0.876. NaN where nothing looped before."""
    return (before - after) / before if before else float("nan")


def reductions(vs: pd.DataFrame) -> pd.DataFrame:
    """Per family, its best DPO run (lowest degeneration, then lowest CER) against SFT, with the
    relative reduction; a last row holds the mean over families where one is defined (the
    paper's mean -59.4%)."""
    if vs.empty:
        return pd.DataFrame()
    best = vs.sort_values(["family", "dpo_deg", "dpo_cer"]).groupby("family", sort=True).head(1)
    out = best[["family", "beta", "sft_deg", "dpo_deg", "mcnemar_p", "sft_cer", "dpo_cer"]].copy()
    out["relative_reduction"] = [relative_reduction(a, b) for a, b in zip(out.sft_deg, out.dpo_deg)]
    mean = {"family": "mean", "relative_reduction": out.relative_reduction.mean()}  # NaNs skipped
    return pd.concat([out, pd.DataFrame([mean])], ignore_index=True)


def pair_stats(artifacts_dir: str | Path) -> pd.DataFrame:
    """Per pair set: documents, candidates, documents with a degenerate candidate, pairs built."""
    rows = []
    for f in sorted(Path(artifacts_dir).glob("pairs/*/stats.json")):
        if (f.parent / COMPLETE).exists():
            s = json.loads(f.read_text())
            rows.append({k: s.get(k) for k in ("family", "documents", "candidates", "degenerate_candidates",
                                                "good_candidates", "docs_with_degenerate", "pairs")})
    return pd.DataFrame(rows)


def write(out_dir: str | Path, command: str, **tables: pd.DataFrame) -> None:
    """Each table as CSV and as Markdown (README.md), with the command that made them."""
    out_dir = Path(out_dir)
    md = [f"# {out_dir.name}\n", f"Made by: `{command}`\n"]
    for name, df in tables.items():
        io.write_text(out_dir / f"{name}.csv", df.to_csv(index=False))
        md += [f"## {name}\n", df.drop(columns=["run_dir"], errors="ignore").to_markdown(index=False, floatfmt=".4g"), ""]
    io.write_text(out_dir / "README.md", "\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> None:
    import sys

    p = argparse.ArgumentParser(description="Comparison tables of finished degenbench runs.")
    p.add_argument("--runs", default="results/runs")
    p.add_argument("--artifacts", default="results/artifacts")
    p.add_argument("--out", default="results/toy")
    p.add_argument("--command", default=None, help="the command that produced the runs (recorded)")
    args = p.parse_args(argv)
    table = runs_table(args.runs)
    vs = versus_sft(table)
    pairs = pair_stats(args.artifacts)
    cmd = shlex.join(["python", "-m", "degenbench.report", *(argv if argv is not None else sys.argv[1:])])
    if args.command:
        cmd = f"{args.command} && {cmd}"
    write(args.out, cmd, runs=table, dpo_vs_sft=vs, reduction=reductions(vs), pairs=pairs)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns=["run_dir", "run_id"]).to_string(index=False))
        print(vs.to_string(index=False))
        print(pairs.to_string(index=False))


if __name__ == "__main__":
    main()
