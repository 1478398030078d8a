"""Do the loop detectors agree? Each page of each run flagged by the paper's rule and by the
field's detectors (degenbench/metrics/detectors.py), then per detector: pages flagged, pages it
alone flags, its false positives on repetitive pages whose output ended on its own, and Cohen's
kappa with every other detector.

    python -m degenbench.analysis.detectors --runs results/toy/runs results/mitigations/runs --out results/detectors

Run folders archived without token ids (degenbench-report --archive) are scored with one token per
character, which is what the tiny stand-ins' tokenizer is (bytes aside)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from statsmodels.stats.inter_rater import cohens_kappa

from degenbench import io
from degenbench.analysis.runs import load_predictions, load_runs
from degenbench.decoding.vllm import repetition_detection
from degenbench.metrics.detectors import flags as detector_flags

DETECTORS = ["rule", "repeat_detector", "token_pattern", "compression"]
# the per-page columns a run records (metrics/detectors.flags) -> the detector they are
FLAGS = {"flag_repeat_detector": "repeat_detector", "flag_token_pattern": "token_pattern",
         "flag_compression": "compression"}


def page_flags(runs: pd.DataFrame, preds: pd.DataFrame, min_run: float = 0.5, min_repeats: int = 4) -> pd.DataFrame:
    """One row per run and page: the rule's flag (`degenerate`) and each detector's, as the run
    recorded them (`flag_*`), else computed from the output: vLLM's test then uses the pattern sizes
    degenbench gives it at the run's budget (generation.loop_rule's min_run) on character tokens."""
    rules = {run: repetition_detection({"min_run": min_run, "min_repeats": min_repeats}, int(budget))
             for run, budget in runs.set_index("run_id").max_new_tokens.items()}
    recorded = set(FLAGS) <= set(preds.columns)
    rows = []
    for p in preds.itertuples():
        if recorded and pd.notna(p.flag_token_pattern):  # flagged as the run generated, on its tokens
            found = {k: bool(getattr(p, k)) for k in FLAGS}
        else:
            ids = list(p.token_ids) if "token_ids" in preds.columns and p.token_ids is not None \
                else [ord(c) for c in p.prediction]
            found = detector_flags(p.prediction, ids, rules[p.run_id])
        rows.append({"run_id": p.run_id, "doc_id": p.doc_id, "repetitive": bool(p.repetitive),
                     "ended": not (p.hit_limit or p.loop_stopped), "rule": bool(p.degenerate),
                     **{FLAGS[k]: v for k, v in found.items()}})
    return pd.DataFrame(rows)


def table(flags: pd.DataFrame) -> pd.DataFrame:
    """Per detector: flagged pages, pages no other detector flags, flags on pages whose output ended
    on its own (neither at the token limit nor cut by LoopStop: a false positive, as the paper's rule
    counts loops), on repetitive ones apart, and kappa against each other detector."""
    ended_repetitive = flags.repetitive & flags.ended
    out = []
    for d in DETECTORS:
        others = flags[[o for o in DETECTORS if o != d]].any(axis=1)
        row = {"detector": d, "n_pages": len(flags), "flagged": int(flags[d].sum()),
               "alone": int((flags[d] & ~others).sum()), "n_repetitive_ended": int(ended_repetitive.sum()),
               "false_pos_repetitive": int((flags[d] & ended_repetitive).sum()),
               "false_pos_ended": int((flags[d] & flags.ended).sum())}
        for o in DETECTORS:
            if o != d:
                t = pd.crosstab(flags[d], flags[o]).reindex(index=[False, True], columns=[False, True], fill_value=0)
                row[f"kappa_{o}"] = float(cohens_kappa(t.to_numpy(), return_results=False)) if t.to_numpy().trace() < len(flags) else 1.0
        out.append(row)
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Loop detectors side by side on run folders' outputs.")
    p.add_argument("--runs", nargs="+", required=True, help="folders of run folders")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    runs = pd.concat([load_runs(r) for r in args.runs], ignore_index=True)
    runs = runs[runs.stage != "reference"]
    flags = page_flags(runs, load_predictions(runs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = table(flags)
    io.write_text(out / "detectors.csv", t.to_csv(index=False))
    io.write_text(out / "detectors.md", t.to_markdown(index=False, floatfmt=".3f"))
    print(t.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
