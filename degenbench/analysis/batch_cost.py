"""What loops cost the healthy requests batched with them (issue 32): DharmaOCR measured 2.42%
looping requests making a vLLM batch of pages take 7.3 min instead of 4.2, and healthy requests
15-71% slower while a loop shared their batch. The cost table counts a loop's own tokens and seconds;
this counts the batch's.

Static batching (HF generate, degenbench's evaluation): a batch decodes until its longest row ends,
and returns all its rows then, so a healthy row's latency is its batch's. Without its loops a batch
ends with its longest healthy row. Decoding steps (the longest row's new tokens) measure that
without timing noise; the prompt's prefill is left out (the same with and without loops)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

# DharmaOCR (arXiv 2604.14314): looping share, batch minutes with and without, healthy rows' slowdown
PAPER = {"share": 0.0242, "minutes": (7.3, 4.2), "reported": 0.4247, "healthy": (0.15, 0.71)}


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.1%}"


def paper_line() -> str:
    """The paper's figures, with both readings of its 42.47%: (7.3 - 4.2) / 7.3 is the share of the
    batch's time due to loops; as a slowdown against the batch without them it is 7.3 / 4.2 - 1."""
    full, clean = PAPER["minutes"]
    lo, hi = PAPER["healthy"]
    return (f"DharmaOCR (vLLM, continuous batching): {PAPER['share']:.2%} looping requests; batch {full} min "
            f"against {clean} min without them: loops' share of the batch time (full - clean) / full = "
            f"{(full - clean) / full:.2%} (the paper's \"{PAPER['reported']:.2%} slower\"), slowdown full / clean - 1 "
            f"= {full / clean - 1:+.1%}; healthy requests {lo:.0%}-{hi:.0%} slower while a loop shared their batch.")


def at_share(p: float, batch_size: int, mixed_steps: float, clean_steps: float) -> float:
    """Step inflation of static batches of `batch_size` if a share `p` of rows looped (computed, not
    measured): a batch holds a loop with probability 1 - (1 - p)^B and then runs `mixed_steps`
    (a held loop runs to the limit), otherwise `clean_steps` (a batch's longest healthy row)."""
    if not clean_steps or not np.isfinite(mixed_steps):
        return float("nan")
    q = 1 - (1 - p) ** batch_size
    return q * (mixed_steps / clean_steps - 1)


def static_cost(pred: pd.DataFrame) -> dict:
    """Static-batch cost of the degenerate rows in `pred` (rows with batch, new_tokens, degenerate;
    seconds optional, a row's equal share of its batch's generate time). Steps: sum over batches of
    the longest row, with all rows and with the degenerate rows removed from the same batches.
    Healthy latency: per batch with a loop and a healthy row, its steps against the steps of its
    healthy rows alone (min, median, max over those batches)."""
    per = pred.groupby("batch").apply(lambda b: pd.Series({
        "rows": len(b), "loops": int(b.degenerate.sum()), "steps": b.new_tokens.max(),
        "clean": b.loc[~b.degenerate, "new_tokens"].max() if (~b.degenerate).any() else 0}), include_groups=False)
    mixed = per[(per.loops > 0) & (per.loops < per.rows)]
    lat = (mixed.steps / mixed.clean - 1) if len(mixed) else pd.Series(dtype=float)
    steps, clean = int(per.steps.sum()), int(per["clean"].sum())
    looped = per[per.loops > 0]
    healthy_batches = per[per["clean"] > 0]
    return {"pages": len(pred), "loops": int(per.loops.sum()), "share": per.loops.sum() / len(pred),
            "batches": len(per), "batches_with_loop": len(looped), "healthy_in_mixed": int((mixed.rows - mixed.loops).sum()),
            "steps": steps, "steps_clean": clean, "step_inflation": steps / clean - 1 if clean else float("nan"),
            "loop_step_share": (steps - clean) / steps if steps else float("nan"),
            "healthy_lat_min": lat.min(), "healthy_lat_median": lat.median(), "healthy_lat_max": lat.max(),
            "at_paper_share": at_share(PAPER["share"], int(per.rows.max()), looped.steps.mean() if len(looped) else float("nan"),
                                       healthy_batches["clean"].mean() if len(healthy_batches) else 0)}


def _as_batched(run_dir) -> bool:
    """Whether a run's `batch` column gives its pages' batches as generated: an HF run (a vLLM
    run's batches are not static), not one at k x the budget that took the pages which ended before
    the 1x limit from the 1x run and generated only the others (two sets of batches in one table)."""
    f = Path(run_dir) / "metrics.json" if isinstance(run_dir, (str, Path)) else None  # NaN: a W&B-only run
    if f is None or not f.is_file():
        return False
    m = json.loads(f.read_text())
    reused = m.get("reused") or {}
    return (m.get("decoding") or {}).get("backend", "hf") == "hf" and not (reused.get("pages") and reused.get("generated"))


def batch_cost(runs: pd.DataFrame, predictions: pd.DataFrame | None) -> pd.DataFrame:
    """Per local run that loops and whose batches are recorded as generated (_as_batched), the
    static-batch cost of its loops (static_cost): decoding steps with and without them, its healthy
    rows' latency in steps, and the inflation computed at the paper's looping share. From the
    records, not timed: a run does not generate its batches again without their loops."""
    cols = ["family", "size", "eval_set", "seed", "stage", "beta", "run_id"]
    if predictions is None or "batch" not in predictions or predictions.batch.isna().all():
        return pd.DataFrame()
    rows = []
    for r in runs[[_as_batched(d) for d in runs.run_dir]].itertuples():
        pred = predictions[(predictions.run_id == r.run_id) & predictions.batch.notna()]
        if len(pred) and pred.degenerate.any():
            rows.append({c: getattr(r, c) for c in cols} | static_cost(pred))
    return pd.DataFrame(rows)


README = ("`batch_cost`: what a run's loops cost the healthy pages batched with them, as HF generates (static "
          "batches: a batch decodes until its longest row ends, and its rows return together), from the "
          "recorded batches: decoding steps (sum over batches of the longest row's new tokens) with all rows "
          "and with the degenerate rows taken out of the same batches (`step_inflation`; `loop_step_share` = "
          "(steps - steps_clean) / steps, the measure of the paper's 42.47%), and per batch holding a loop "
          "and a healthy row, its steps against those of its healthy rows alone (`healthy_lat_*`: min, "
          "median, max). `at_paper_share`: the inflation computed for 2.42% looping rows. Steps, not "
          "seconds: runs do not time their batches without the loops (`benchmarks/loop_cost.py` does). "
          "Left out: vLLM runs, and runs at k x the budget that took the 1x run's finished pages. "
          + paper_line() + "\n")
