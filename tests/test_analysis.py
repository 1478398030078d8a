"""Analysis: the runs DataFrame from the local store and from W&B's API, the paired
statistics, and the report writing every table and figure."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from degenbench.analysis import report
from degenbench.analysis import COLUMNS, load_runs, load_training, load_wandb, tables

FIGURES = ["degeneration", "beta", "cost", "lengths", "dpo_curves"]
TABLES = ["runs", "stages", "beta_choice", "beta_sweep", "comparisons", "reduction", "cost", "pairs"]


class Api:
    """wandb.Api's `runs()` as W&B serves a project once tracking.log_run has logged it: each
    evaluation run's config and summary are the run folder's config.yaml and metrics.json. W&B's
    servers cannot be reached here; this serves what log_run sends them."""

    def __init__(self, runs_dir):
        self.runs_dir, self.queries = runs_dir, []

    def runs(self, path, filters=None):
        from types import SimpleNamespace
        from omegaconf import OmegaConf
        import json

        self.queries.append((path, filters))
        out = []
        for d in sorted(p for p in self.runs_dir.iterdir() if (p / "metrics.json").is_file()):
            metrics = json.loads((d / "metrics.json").read_text())
            out.append(SimpleNamespace(id=metrics["wandb_run_id"], config=OmegaConf.to_container(OmegaConf.load(d / "config.yaml")),
                                       summary=metrics))
        return out


def test_local_and_wandb_loaders_give_the_same_table(chain):
    root = chain.root
    api = Api(root / "runs")
    local, wb = load_runs(root / "runs"), load_wandb("me/degenbench", {"tags": "toy"}, api=api)
    assert api.queries[0][0] == "me/degenbench" and {"tags": "toy"} in api.queries[0][1]["$and"]
    assert list(local.columns) == list(wb.columns) == list(COLUMNS)
    assert local.stage.tolist() == wb.stage.tolist() == ["vanilla", "sft", "dpo", "dpo", "dpo", "dpo"]
    assert sorted(local.eval_set) == ["heldout"] * 4 + ["validation"] * 2  # validation: DPO jobs only
    assert set(local.source) == {"local"} and set(wb.source) == {"wandb"} and wb.run_dir.isna().all()
    same = [c for c in COLUMNS if c not in ("source", "run_dir")]
    pd.testing.assert_frame_equal(local[same], wb[same])
    assert local.wandb_run_id.notna().all() and local.max_new_tokens.eq(24).all()


def test_report_writes_every_table_and_figure(chain, tmp_path):
    runs = load_runs(chain.root / "runs")
    named = report.report(runs, tmp_path, "test command")
    for t in TABLES:
        assert all((tmp_path / f"{t}.{ext}").stat().st_size > 0 for ext in ("csv", "md", "tex")), t
    for f in FIGURES:
        with Image.open(tmp_path / f"{f}.png") as im:
            assert im.width > 400 and im.height > 300, f
        assert (tmp_path / f"{f}.pdf").read_bytes().startswith(b"%PDF")
    readme = (tmp_path / "README.md").read_text()
    assert "test command" in readme and "![lengths](lengths.png)" in readme
    assert "validation" in readme and "pooled" in readme
    (chosen,) = named["beta_choice"].beta  # on the validation runs of the two betas
    val = runs[runs.eval_set == "validation"].sort_values(["degeneration_rate", "cer", "beta"])
    assert chosen == val.beta.iloc[0]
    stages = named["stages"]
    assert set(stages.eval_set) == {"heldout"} and stages[stages.stage == "dpo"].beta.eq(chosen).all()
    comp = named["comparisons"]
    per_seed = comp[comp.seed.astype(str) == "0"]
    assert per_seed[["from", "to"]].values.tolist() == [["vanilla", "sft"], ["sft", "dpo"], ["sft", "dpo"]]
    assert per_seed.beta_chosen_on.eq("validation").sum() == 1
    held = runs[runs.eval_set == "heldout"]
    held = held.set_index(held.stage + held.beta.fillna(0).astype(str)).n_degenerate
    assert (per_seed.loops_fixed - per_seed.loops_new).tolist() == [
        held["vanilla0.0"] - held["sft0.0"], held["sft0.0"] - held["dpo0.1"], held["sft0.0"] - held["dpo0.5"]]
    assert (comp.cer_diff_ci95_lo <= comp.cer_diff).all() and (comp.cer_diff <= comp.cer_diff_ci95_hi).all()
    curves = load_training(runs)  # DPO logged every step: the curve has each of its steps
    assert {"logps/chosen", "logps/rejected"} <= set(curves.columns)
    assert curves[curves.trained == "dpo"].drop_duplicates(["run_id", "step"]).step.tolist() == [1, 1, 1, 1]


def test_paired_statistics_on_known_inputs():
    idx = [f"d{i}" for i in range(40)]
    a = pd.DataFrame({"degenerate": [True] * 6 + [False] * 34, "cer": np.linspace(0.2, 0.6, 40)}, index=idx)
    b = pd.DataFrame({"degenerate": [False] * 40, "cer": a.cer - 0.1}, index=idx[::-1])  # other order
    out = tables.paired(a, b, "a vs b")
    assert (out["loops_fixed"], out["loops_new"]) == (6, 0)
    assert out["mcnemar_p"] == pytest.approx(2 * 0.5 ** 6)  # exact binomial, two-sided
    assert out["cer_diff"] == pytest.approx(-0.1) and out["cer_diff_ci95_lo"] == pytest.approx(-0.1)
    noisy = b.assign(cer=a.cer.to_numpy()[::-1] - 0.1 + np.random.default_rng(0).normal(0, 0.05, 40))
    out = tables.paired(a, noisy, "a vs noisy")
    assert out["cer_diff_ci95_lo"] < out["cer_diff"] < out["cer_diff_ci95_hi"] < 0
    few = b.assign(cer=a.cer.to_numpy()[::-1] - np.r_[[0.0] * 38, [1.0, 2.0]][::-1])  # 2 of 40 differ
    out = tables.paired(a, few, "a vs few")  # a skewed difference, as when stages agree on most pages
    assert out["cer_diff"] == pytest.approx(-3 / 40)
    assert out["cer_diff_ci95_lo"] < out["cer_diff"] < out["cer_diff_ci95_hi"] <= 0
    with pytest.raises(ValueError, match="different documents"):
        tables.paired(a, b.iloc[1:], "a vs fewer")


def test_loop_overhead_is_the_batch_time_past_the_last_clean_row():
    pred = pd.DataFrame({"batch": [0, 0, 0, 1, 1], "new_tokens": [40, 50, 160, 30, 20],
                         "degenerate": [False, False, True, False, False], "seconds": [1.0] * 5})
    seconds, share = tables.loop_overhead(pred)
    assert seconds == pytest.approx(3 * (1 - 50 / 160)) and share == pytest.approx(seconds / 5)
    assert math.isnan(tables.loop_overhead(pred.drop(columns="batch"))[0])


def test_committed_toy_records_regenerate_the_committed_tables(tmp_path):
    """`degenbench-report --runs results/toy/runs` on a clean checkout gives the committed tables."""
    root = Path(__file__).resolve().parents[1] / "results/toy"
    report.main(["--runs", str(root / "runs"), "--out", str(tmp_path)])
    for t in ("runs", "stages", "beta_sweep", "comparisons", "reduction", "cost"):
        new, old = pd.read_csv(tmp_path / f"{t}.csv"), pd.read_csv(root / f"{t}.csv")
        pd.testing.assert_frame_equal(new.drop(columns=["run_dir"], errors="ignore"),
                                      old.drop(columns=["run_dir"], errors="ignore"), check_exact=False)
    assert all((tmp_path / f"{f}.png").is_file() for f in FIGURES)
