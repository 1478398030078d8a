"""What loops cost the healthy rows batched with them (issue 32): the static-batch accounting
(analysis/batch_cost.py) on hand-made and on the committed toy records, and benchmarks/loop_cost.py
(its --smoke run: tests/test_benchmarks.py)."""
import pandas as pd
import pytest

from degenbench.analysis import batch_cost, runs as runs_mod
from degenbench.config import ROOT


def test_static_cost_counts_each_batch_until_its_longest_row():
    pred = pd.DataFrame({"batch": [0, 0, 0, 1, 1, 2, 2], "new_tokens": [40, 50, 160, 30, 20, 160, 160],
                         "degenerate": [False, False, True, False, False, True, True]})
    s = batch_cost.static_cost(pred)
    # all rows: 160 + 30 + 160; without the loops: 50 + 30 + 0 (batch 2 was only loops)
    assert (s["steps"], s["steps_clean"], s["loops"], s["batches_with_loop"]) == (350, 80, 3, 2)
    assert s["step_inflation"] == pytest.approx(350 / 80 - 1) and s["loop_step_share"] == pytest.approx(270 / 350)
    # one batch holds both a loop and healthy rows (batch 0): its 2 healthy rows wait 160 steps, not 50
    assert s["healthy_in_mixed"] == 2 and s["healthy_lat_min"] == s["healthy_lat_max"] == pytest.approx(160 / 50 - 1)
    # at 2.42% loops a batch of 3 holds one with probability 1 - 0.9758^3; it then runs 160 steps, else 40
    q = 1 - (1 - 0.0242) ** 3
    assert s["at_paper_share"] == pytest.approx(q * (160 / 40 - 1))


def test_batch_cost_from_the_committed_toy_records():
    """Every toy run that loops, as recorded; the 4x runs that took the 1x run's finished pages are
    left out (their rows come from two sets of batches)."""
    runs = runs_mod.load_runs(ROOT / "results/toy/runs")
    runs = runs[runs.stage != "reference"]
    preds = runs_mod.load_predictions(runs, columns=["run_id", "batch", "new_tokens", "degenerate"])
    table = batch_cost.batch_cost(runs, preds)
    looping = runs[runs.n_degenerate > 0]
    assert len(table) and set(table.run_id) <= set(looping.run_id)
    assert not table.eval_set.str.contains("@").any()  # every toy 4x run extended its 1x run
    assert set(looping[~looping.eval_set.str.contains("@")].run_id) == set(table.run_id)
    merged = table.merge(runs[["run_id", "n_degenerate", "n_docs"]], on="run_id")
    assert (merged.loops == merged.n_degenerate).all() and (merged.pages == merged.n_docs).all()
    assert (table.steps > table.steps_clean).all() and (table.healthy_lat_max >= table.healthy_lat_min).all()
    assert batch_cost.batch_cost(runs, None).empty
