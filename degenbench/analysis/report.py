"""Every table and figure of a sweep, from its runs, in one command.

    degenbench-report --runs outputs/runs --out results/toy [--archive results/toy/runs]
    degenbench-report --runs results/toy/runs --out results/toy        # from the committed records
    degenbench-report --wandb my-entity/degenbench --filters '{"tags": "paper"}' --out results/paper

Tables go out as CSV, Markdown and LaTeX, figures as PNG and PDF, and README.md shows them all
with the command that made them. From W&B only the run-level tables and figures are made (the
per-document ones need the local run folders: their predictions and training history).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
import shutil
import sys
from pathlib import Path

import matplotlib
import pandas as pd

from degenbench import io
from degenbench.analysis import batch_cost, figures, mitigation_tables, persistence, runs as runs_mod, tables

log = logging.getLogger(__name__)
REFERENCES = ("Reference rows (stage `reference`, family = the system; `degenbench stage=reference`): "
              "`blind-answer` answers every page with the most common training answer, `blind-fields` with "
              "each field's most common training value, `tesseract` is Tesseract 5 (`--psm 6`, page scaled "
              "2x, Portuguese); scored on the same pages with the same metrics. They are rows of `stages` and "
              "`quality` (references first), and of no table comparing a model's stages.\n")
RECORD_FILES = ("metrics.json", "config.yaml", "heldout_ids.json", "training.json")


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: rates as percentages with their intervals, 3-4 significant digits."""
    df = df.drop(columns=["run_dir", "run_id", "source", "max_new_tokens"], errors="ignore").copy()
    text = df.select_dtypes(exclude=["number", "bool"]).columns
    df[text] = df[text].astype(object).where(df[text].notna(), "")  # a missing label reads blank, not "nan"
    if "beta" in df:
        df["beta"] = [f"{b:g}" if pd.notna(b) else "" for b in df.beta]
    if {"degeneration_rate", "deg_ci95_lo", "deg_ci95_hi"} <= set(df.columns):
        df["degeneration_rate"] = [f"{100 * r:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]" for r, lo, hi
                                   in zip(df.degeneration_rate, df.deg_ci95_lo, df.deg_ci95_hi)]
        df = df.drop(columns=["deg_ci95_lo", "deg_ci95_hi"]).rename(columns={"degeneration_rate": "degeneration (95% CI)"})
    if {"cer_diff", "cer_diff_ci95_lo", "cer_diff_ci95_hi"} <= set(df.columns):
        df["cer_diff"] = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi
                          in zip(df.cer_diff, df.cer_diff_ci95_lo, df.cer_diff_ci95_hi)]
        df = df.drop(columns=["cer_diff_ci95_lo", "cer_diff_ci95_hi"]).rename(columns={"cer_diff": "CER diff (95% CI)"})
    if {"persist_share", "persist_ci95_lo", "persist_ci95_hi"} <= set(df.columns):
        df["persist_share"] = [f"{100 * r:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]" if pd.notna(r) else ""
                               for r, lo, hi in zip(df.persist_share, df.persist_ci95_lo, df.persist_ci95_hi)]
        df = df.drop(columns=["persist_ci95_lo", "persist_ci95_hi", "run_id_1x", "run_id_kx"]) \
            .rename(columns={"persist_share": "persisting (95% CI)"})
    return df


def write_tables(out: Path, named: dict[str, pd.DataFrame]) -> list[str]:
    """name.csv (all columns, full precision), name.md and name.tex (formatted); Markdown lines."""
    md = []
    for name, df in named.items():
        io.write_text(out / f"{name}.csv", df.to_csv(index=False))
        shown = _fmt(df)
        io.write_text(out / f"{name}.md", shown.to_markdown(index=False, floatfmt=".4g") + "\n")
        io.write_text(out / f"{name}.tex", shown.to_latex(index=False, float_format="%.4g", na_rep="",
                                                          escape=True))
        md += [f"### {name}\n", shown.to_markdown(index=False, floatfmt=".4g"), ""]
    return md


def archive(runs: pd.DataFrame, dest: Path) -> None:
    """Compact copies of the run folders for committing, holding what the tables and figures read:
    the records, predictions without token ids (zstd, no column statistics), and a model's training
    log once (every run of a model carries the same one; the training-curve figure needs one).
    `--runs` can point at them later to regenerate everything."""
    logs = {hashlib.sha256(f.read_bytes()).hexdigest() for f in Path(dest).glob("*/training.json")}
    for r in runs.itertuples():
        src, dst = Path(r.run_dir), dest / Path(r.run_dir).name
        dst.mkdir(parents=True, exist_ok=True)
        for f in RECORD_FILES:
            if not (src / f).is_file():
                continue
            if f == "training.json":
                digest = hashlib.sha256((src / f).read_bytes()).hexdigest()
                if digest in logs and not (dst / f).is_file():
                    continue
                logs.add(digest)
            shutil.copyfile(src / f, dst / f)
        pred = pd.read_parquet(src / "predictions.parquet").drop(columns=["token_ids"], errors="ignore")
        with io.atomic_path(dst / "predictions.parquet") as tmp:
            pred.to_parquet(tmp, index=False, compression="zstd", compression_level=19, write_statistics=False)
        shutil.copyfile(src / runs_mod.COMPLETE, dst / runs_mod.COMPLETE)  # last: the copy is whole


# What a table needs, said where a store lacks it (e.g. DPO runs copied without their SFT runs)
NEEDS = {"beta_sweep": "DPO runs", "comparisons": "SFT runs beside vanilla or DPO runs of one model on the same pages",
         "reduction": "SFT and DPO runs of one family on the same pages", "pairs": "DPO runs",
         "persistence": "runs at k times the budget (eval sets <set>@<k>x) beside their 1x runs",
         "beta_choice": "DPO runs on the validation set", "cost": "runs with generation timings",
         "batch_cost": "local HF runs that loop, with each page's batch recorded as generated"}


def report(runs: pd.DataFrame, out: str | Path, command: str, skipped: pd.DataFrame | None = None,
           with_figures: bool = True) -> dict:
    """Write every table and figure of `runs` into `out`; returns {name: DataFrame}. `skipped`:
    reference systems that could not run (runs.skipped_systems), listed in the README.
    with_figures=False: the tables only (drawing and saving the figures is most of a small report's time)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unreadable = runs.attrs.get("unreadable", [])  # run records left out (runs.load_runs)
    trained = runs[runs.stage.isin(["sft", "dpo"])]
    if trained.groupby(["family", "size", "seed"]).teacher_loops.nunique().gt(1).any():  # a sweep over the share
        return _shares_report(runs, out, command)
    local = runs.run_dir.notna().all()
    # the pipeline's tables: no mitigation, SFT trained, DPO as the pipeline trains it; every other
    # arm (mitigations, objectives, rejections, no SFT) is compared with SFT in the `arms` table
    every, runs = runs, runs[runs.mitigation.isin(["none", "-"]) & runs_mod.pipeline_training(runs)]
    preds = runs_mod.load_predictions(runs) if local else None
    choice = tables.choose_beta(runs)  # once: its warning (no validation runs) is said once
    comp = tables.comparisons(runs, preds, choice=choice) if local else pd.DataFrame()
    stages = tables.stage_table(runs, choice)
    named = {"runs": runs, "quality": tables.quality(stages), "beta_choice": choice, "stages": stages,
             "beta_sweep": tables.beta_sweep(runs, choice), "comparisons": comp,
             "reduction": tables.reductions(comp), "cost": tables.cost(runs, preds)}
    if local:  # each DPO run's metrics.json records its pair set's statistics
        named["pairs"] = tables.pair_stats(runs)
        if not (loops := tables.teacher_loops(runs)).empty:  # where SFT's teacher-loop labels sit
            named["teacher_loops"] = loops
        named["persistence"] = persistence.persistence(runs, preds, choice)
        named["batch_cost"] = batch_cost.batch_cost(runs, preds)  # what loops cost their batch-mates
    figs = {}
    if with_figures:
        figs = {"degeneration": figures.degeneration(named["stages"]), "beta": figures.beta(named["beta_sweep"]),
                "cost": figures.cost(named["cost"], named["stages"])}
        if local:
            figs |= {"lengths": figures.lengths(preds, named["stages"]),
                     "dpo_curves": figures.dpo_curves(runs_mod.load_training(runs))}
    if not local:
        log.warning("runs from W&B: per-document tables and figures (comparisons, lengths, dpo_curves) "
                    "need the local run folders and are not made")
    if local and len(every) > len(runs):  # other arms: their own table and figure
        mit_preds = runs_mod.load_predictions(every)
        mitigated = ~every.mitigation.isin(["none", "-"])
        # decode-time mitigations only: the table's name of before
        name = "mitigations" if mitigated.any() and every.mitigation.isin(["none", "-"]).sum() == len(runs) else "arms"
        named[name] = mitigation_tables.table(every, mit_preds, choice)
        if mitigated.any():
            named["mitigation_audit"] = mitigation_tables.audit(every, mit_preds, mitigation_tables.rule_of(every), choice)
        if with_figures:
            figs[name] = mitigation_tables.figure(named[name])
    md = [f"# {out.name}\n", f"Made by: `{command}`\n",
          "Tables: `<name>.csv` (full precision), `.md`, `.tex`; figures: `<name>.png`, `.pdf`. Columns of "
          "`runs`: see `degenbench.analysis.runs.COLUMNS`. Rates carry Wilson 95% intervals; `comparisons` "
          "pairs runs on the same documents within a seed (exact McNemar on the degenerate flags, paired "
          "bootstrap BCa interval of the mean CER difference, resampling pages).\n",
          "`persistence`: each model's pages degenerate at 1x the token budget against the same pages at k "
          "times it (eval set `<set>@<k>x`, matched by document): how many persist (with a Wilson interval "
          "on the share), how many recover, how many are degenerate only at kx.\n",
          "DPO's beta is chosen per family, size and seed on the `validation` eval set (lowest degeneration, "
          "then lowest CER, then lowest beta; `beta_choice`) and reported on the other eval sets; a model "
          "without validation runs gets no chosen beta, and its tables list every beta.\n",
          "Rows with seed `pooled` pool the seeds: counts summed, the Wilson interval taken on the sums, "
          "CER, NED, score and JSON validity weighted by documents, `cer_not_degenerate` (the CER of the "
          "pages whose output did not loop) by those pages, `deg_rate_sd` the spread of the rate "
          "across seeds. Pooled comparisons are stratified by seed (`units`: pages within seeds): pages "
          "are paired only within their seed, McNemar's exact test runs on the discordant pairs summed "
          "over seeds, and the bootstrap resamples pages within each seed (percentile interval). The "
          "figures draw the pooled rows.\n", REFERENCES]
    if skipped is not None and len(skipped):
        log.warning("%d reference runs were skipped: %s", len(skipped), "; ".join(
            f"{r.system} on {r.eval_set} seed {r.seed}: {r.why}" for r in skipped.itertuples()))
        md += ["**Skipped reference systems** (no rows in the tables):\n",
               *[f"- `{r.system}` on `{r.eval_set}`, seed {r.seed}: {r.why}" for r in skipped.itertuples()], ""]
    if unreadable:
        md += [f"**{len(unreadable)} unreadable run records** (left out of every table; rerun their jobs):\n",
               *[f"- `{r['run']}`: {r['why']}" for r in unreadable], ""]
    if empty := [f"`{n}` ({NEEDS[n]})" for n, df in named.items() if df.empty and n in NEEDS]:
        log.warning("tables left empty, for want of the runs they compare: %s", "; ".join(empty))
        md += ["**Tables left empty** (this store lacks the runs they need): " + "; ".join(empty) + ".\n"]
    if "batch_cost" in named and not named["batch_cost"].empty:
        md.append(batch_cost.README)
    if "mitigations" in named or "arms" in named:
        md.append(mitigation_tables.README)
    md += ["## Figures\n"] if figs else []
    for name, fig in figs.items():
        figures.save(fig, out, name)
        md.append(f"![{name}]({name}.png)\n")
    md += ["## Tables\n", *write_tables(out, named)]
    io.write_text(out / "README.md", "\n".join(md) + "\n")
    return named


def _shares_report(runs: pd.DataFrame, out: Path, command: str) -> dict:
    """A sweep over the teacher-loop share (experiment=teacher-shares): the share chosen per family
    on the validation pages; the pipeline's tables compare stages of one organism, not this."""
    named = {"runs": runs, "teacher_shares": tables.teacher_shares(runs), "teacher_loops": tables.teacher_loops(runs)}
    lo, hi = tables.SHARE_BAND
    md = [f"# {out.name}\n", f"Made by: `{command}`\n",
          f"`teacher_shares`: SFT of each family at each teacher-loop share (`teacher_loops`), evaluated on the "
          f"validation pages only. Chosen (`chosen`): the smallest share whose degeneration lies in "
          f"{lo:.0%}-{hi:.0%} (the paper's SFT range); where none does, the share whose rate lies nearest to "
          "it, then the smaller. `teacher_loops`: where the labels sit (per kind of content).\n",
          "## Tables\n", *write_tables(out, named)]
    io.write_text(out / "README.md", "\n".join(md) + "\n")
    return named


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="degenbench-report", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="outputs/runs", help="folder of run folders (local store)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="load the runs from this W&B project instead")
    p.add_argument("--filters", type=json.loads, default=None, help="W&B run filters as JSON")
    p.add_argument("--out", default="results/report", help="where tables and figures go")
    p.add_argument("--archive", help="also copy compact run records here (to commit beside the report)")
    p.add_argument("--command", default=None, help="the command that produced the runs (recorded)")
    p.add_argument("--no-figures", action="store_true", help="the tables only (quicker: e.g. to check a store)")
    args = p.parse_args(argv)
    matplotlib.use("Agg")  # files only, even where a display is set
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    runs = runs_mod.load_wandb(args.wandb, args.filters) if args.wandb else runs_mod.load_runs(args.runs)
    if args.archive:
        archive(runs, Path(args.archive))
    cmd = shlex.join(["degenbench-report", *(argv if argv is not None else sys.argv[1:])])
    skipped = None if args.wandb else runs_mod.skipped_systems(args.runs, runs)
    named = report(runs, args.out, f"{args.command} && {cmd}" if args.command else cmd, skipped,
                   with_figures=not args.no_figures)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        for name in ("teacher_shares", "stages", "reduction"):
            if name in named:
                print((_fmt(named[name]) if name == "stages" else named[name]).to_string(index=False))
    print(f"tables{'' if args.no_figures else ' and figures'} in {args.out}/")


if __name__ == "__main__":
    main()
