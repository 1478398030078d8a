"""The vanilla evaluation stage end to end, through the `degenbench` command."""
import json
import subprocess
import sys
from pathlib import Path

import joblib
import pandas as pd
from omegaconf import OmegaConf

SUMMARY_KEYS = {"degeneration_rate", "degeneration_ci95", "cer", "ned", "score", "json_valid_rate",
                "n_docs", "n_skipped", "skipped", "wandb_run_id"}


def degenbench(*args):
    out = subprocess.run([sys.executable, "-m", "degenbench", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def runs(results: Path) -> list[Path]:
    return sorted((results / "runs").iterdir())


def test_toy_sweep_over_the_five_families(tmp_path):
    degenbench("experiment=toy", "seed=0", "stage=vanilla", "dpo.beta=0.1", "data.n_docs=10", "data.heldout=3",
               "data.validation=2", "data.eval_only=2", f"paths.results_dir={tmp_path}")
    dirs = runs(tmp_path)
    summaries = [json.loads((d / "metrics.json").read_text()) for d in dirs]
    families = ["qwen2.5-vl-3b", "qwen2.5-vl-7b", "nanonets-ocr2-3b", "olmocr-2-7b", "gemma-3-4b"]
    for eval_set, tokens in (("heldout", 256), ("heldout@4x", 1024)):  # validation: DPO jobs only
        here = [s for s in summaries if s["eval_set"] == eval_set]
        assert sorted(s["family"] for s in here) == sorted(families)
        assert all(s["budget"]["max_new_tokens"] == tokens for s in here)
    assert len(summaries) == 2 * len(families)
    heldout = {json.dumps(json.loads((d / "heldout_ids.json").read_text())) for d in dirs}
    assert len(heldout) == 1  # every family on the same held-out documents, at 1x and 4x the budget
    for d, s in zip(dirs, summaries):
        assert SUMMARY_KEYS <= set(s) and s["n_docs"] == 3 + 2 and s["n_skipped"] == 0
        lo, hi = s["degeneration_ci95"]
        assert 0 <= lo <= s["degeneration_rate"] <= hi <= 1
        assert s["wandb_mode"] == "offline"
        assert (d / "wandb").is_dir() and any((d / "wandb").glob("offline-run-*/run-*.wandb"))
        table = pd.read_parquet(d / "predictions.parquet")
        assert len(table) == 5 and table["doc_id"].tolist() == json.loads((d / "heldout_ids.json").read_text())
        assert {"prediction", "degenerate", "cer", "ned", "score", "json_valid", "loop_period",
                "seq_rep_n", "compression_ratio", "hit_limit", "new_tokens", "flag_repeat_detector",
                "flag_token_pattern", "flag_compression"} <= set(table.columns)
        assert table["degenerate"].mean() == s["degeneration_rate"]
        assert "family:" in (d / "config.yaml").read_text()
        # per-field CER through the parquet shards: defined wherever the truth has the field
        assert all(isinstance(s[f"cer_{k}"], float) for k in ("header", "margin", "footer", "text"))
        prov = s["provenance"]
        assert prov["versions"]["transformers"] and prov["device"]["dtype"] == "float32"
        assert prov["checkpoint"]["recipe"] and "dirty" in prov["git"]
    # where the sweep's time went, from its own job logs (degenbench.analysis.timing)
    from degenbench.analysis.timing import breakdown, segments

    (sweep,) = (tmp_path / "hydra").glob("multirun_*")
    pieces = segments(sweep)
    assert pieces.job.nunique() == 5 and set(pieces.family) == set(families)
    assert {"job start", "evaluation heldout", "evaluation heldout@4x", "writing runs"} <= set(pieces.activity)
    assert (pieces.seconds >= 0).all()
    for _, job in pieces.groupby("job"):  # a job's pieces tile its own time
        assert (job.start.shift(-1).dropna() == job.end.iloc[:-1]).all()
        assert abs(job.seconds.sum() - (job.end.max() - job.start.min()).total_seconds()) < 0.01
    table = breakdown(pieces)
    wall = (pieces.end.max() - pieces.start.min()).total_seconds()
    workers = OmegaConf.load(sweep / "multirun.yaml").hydra.launcher.n_jobs  # the toy's jobs: two at a time,
    threads = {json.loads((d / "metrics.json").read_text())["provenance"]["host"]["torch_threads"] for d in dirs}
    assert workers == 2 and threads == {max(1, joblib.cpu_count() // workers)}  # each on its share of the cores
    # nothing counted twice: the jobs' time is the wall time or more, at most what the workers could run
    assert wall - 0.5 < table.loc["all", "total"] <= workers * wall + 0.5
