"""Analysis: the runs DataFrame from the local store and from W&B (offline runs), the paired
statistics, and the report writing every table and figure."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from degenbench import report
from degenbench.analysis import COLUMNS, load_runs, load_training, load_wandb, load_wandb_offline, tables
from degenbench.analysis.runs import read_offline_run
from degenbench.config import compose
from degenbench.stages.graph import run_job
from test_stages import TINY

FIGURES = ["degeneration", "beta", "cost", "lengths", "dpo_curves"]
TABLES = ["runs", "stages", "beta_sweep", "comparisons", "reduction", "cost", "pairs"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """vanilla, SFT and DPO (beta 0.1) of one tiny family, logged to W&B offline."""
    root = tmp_path_factory.mktemp("analysis")
    base = TINY + [f"paths.results_dir={root}", "logger=offline", "dpo.logging_steps=1"]
    runs = [run_job(compose(base + o)) for o in (["stage=vanilla"], ["stage=sft"], ["stage=dpo", "dpo.beta=0.1"])]
    return root, runs


def test_local_and_wandb_loaders_give_the_same_table(sweep):
    root, _ = sweep
    local, wb = load_runs(root / "runs"), load_wandb_offline(root / "runs")
    assert list(local.columns) == list(wb.columns) == list(COLUMNS)
    assert local.stage.tolist() == wb.stage.tolist() == ["vanilla", "sft", "dpo"]
    assert set(local.source) == {"local"} and set(wb.source) == {"wandb"} and wb.run_dir.isna().all()
    same = [c for c in COLUMNS if c not in ("source", "run_dir")]
    pd.testing.assert_frame_equal(local[same], wb[same])
    assert local.wandb_run_id.notna().all() and local.max_new_tokens.eq(24).all()


def test_online_loader_asks_for_evaluation_runs_and_maps_them_alike(sweep):
    """No network here: a stand-in for wandb.Api serves the offline runs' config and summary, as
    the API returns them after `wandb sync`."""
    root, _ = sweep

    class Run:
        def __init__(self, f):
            self.id, self.job_type, self.config, self.summary = read_offline_run(f)

    class Api:
        def runs(self, path, filters):
            self.asked = (path, filters)
            wanted = filters["$and"][0]["jobType"]["$in"]
            return [r for r in map(Run, sorted(root.glob("**/offline-run-*/run-*.wandb"))) if r.job_type in wanted]

    api = Api()
    online = load_wandb("me/degenbench", {"tags": "toy"}, api=api)
    assert api.asked == ("me/degenbench", {"$and": [{"jobType": {"$in": ["vanilla", "sft", "dpo"]}}, {"tags": "toy"}]})
    pd.testing.assert_frame_equal(online, load_wandb_offline(root / "runs"))


def test_report_writes_every_table_and_figure(sweep, tmp_path):
    root, _ = sweep
    runs = load_runs(root / "runs")
    named = report.report(runs, tmp_path, "test command", root / "artifacts")
    for t in TABLES:
        assert all((tmp_path / f"{t}.{ext}").stat().st_size > 0 for ext in ("csv", "md", "tex")), t
    for f in FIGURES:
        with Image.open(tmp_path / f"{f}.png") as im:
            assert im.width > 400 and im.height > 300, f
        assert (tmp_path / f"{f}.pdf").read_bytes().startswith(b"%PDF")
    readme = (tmp_path / "README.md").read_text()
    assert "test command" in readme and "![lengths](lengths.png)" in readme
    comp = named["comparisons"]
    assert comp[["from", "to"]].values.tolist() == [["vanilla", "sft"], ["sft", "dpo"]]
    n = runs.n_degenerate.tolist()
    assert (comp.loops_fixed - comp.loops_new).tolist() == [n[0] - n[1], n[1] - n[2]]
    assert (comp.cer_diff_ci95_lo <= comp.cer_diff).all() and (comp.cer_diff <= comp.cer_diff_ci95_hi).all()
    curves = load_training(runs)  # DPO logged every step: the curve has each of its steps
    assert {"logps/chosen", "logps/rejected"} <= set(curves.columns)
    assert curves[curves.trained == "dpo"].step.tolist() == [1]


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
    report.main(["--runs", str(root / "runs"), "--out", str(tmp_path), "--artifacts", str(tmp_path / "none")])
    for t in ("runs", "stages", "beta_sweep", "comparisons", "reduction", "cost"):
        new, old = pd.read_csv(tmp_path / f"{t}.csv"), pd.read_csv(root / f"{t}.csv")
        pd.testing.assert_frame_equal(new.drop(columns=["run_dir"], errors="ignore"),
                                      old.drop(columns=["run_dir"], errors="ignore"), check_exact=False)
    assert all((tmp_path / f"{f}.png").is_file() for f in FIGURES)
