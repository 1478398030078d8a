"""The persistence table: pages degenerate at 1x the token budget, matched by document with the
same model's pages at 4x (eval set heldout@4x), per seed and pooled."""
import json
import logging

import numpy as np
import pytest
from test_tables import chain, predictions, table

from degenbench.analysis import report
from degenbench.analysis import runs as runs_mod
from degenbench.analysis.persistence import COLS, persistence
from degenbench.metrics import wilson
from degenbench.stages.store import COMPLETE


def records(seed, loops_1x, loops_4x, n=10, dpo_1x=(), dpo_4x=()):
    """SFT and DPO (beta 0.1) runs of one seed on heldout and heldout@4x: which pages loop in each."""
    made = [*chain(seed, sft=(len(loops_1x), n), dpo={0.1: (len(dpo_1x), n)}),
            *chain(seed, "heldout@4x", sft=(len(loops_4x), n), dpo={0.1: (len(dpo_4x), n)})]
    loops = {s["run_id"]: set(pages) for s, pages in
             zip(made, [(), loops_1x, dpo_1x, (), loops_4x, dpo_4x])}
    return made, loops


def same_pages(pred):
    return pred.assign(doc_id=pred.doc_id.str.replace("heldout@4x-", "heldout-"))


def test_loops_at_1x_are_matched_by_page_with_4x_per_seed_and_pooled():
    made0, loops0 = records(0, loops_1x=[0, 1, 2], loops_4x=[1, 2, 7], dpo_1x=[4], dpo_4x=[])
    made1, loops1 = records(1, loops_1x=[3], loops_4x=[3, 5, 6])
    runs = table(*made0, *made1)
    pers = persistence(runs, same_pages(predictions(runs, loops0 | loops1)))
    assert list(pers.columns) == COLS
    sft = pers[pers.stage == "sft"]
    assert sft[["seed", "n_seeds", "eval_set", "budget", "n_docs", "n_degenerate_1x", "n_persist", "n_recovered",
                "n_new", "n_degenerate_kx"]].values.tolist() == [
        [0, 1, "heldout", 4.0, 10, 3, 2, 1, 1, 3], [1, 1, "heldout", 4.0, 10, 1, 1, 0, 2, 3],
        ["pooled", 2, "heldout", 4.0, 20, 4, 3, 1, 3, 6]]
    p = sft.iloc[-1]
    assert p.persist_share == pytest.approx(3 / 4) and (p.persist_ci95_lo, p.persist_ci95_hi) == pytest.approx(wilson(3, 4))
    assert (p.deg_rate_1x, p.deg_rate_kx) == pytest.approx((4 / 20, 6 / 20))
    dpo = pers[pers.stage == "dpo"]
    assert dpo.beta.tolist() == [0.1, 0.1, 0.1] and dpo.n_recovered.tolist() == [1, 0, 1]
    assert np.isnan(dpo.persist_share.iloc[1])  # seed 1's DPO never looped at 1x: no share
    vanilla = pers[pers.stage == "vanilla"]
    assert vanilla.n_degenerate_1x.tolist() == [0, 0, 0] and vanilla.persist_ci95_lo.isna().all()


def test_a_4x_run_without_its_1x_run_is_left_out_with_a_warning(caplog):
    made, loops = records(0, [0], [0])
    runs = table(*[s for s in made if not (s["stage"] == "sft" and s["eval_set"] == "heldout")])
    with caplog.at_level(logging.WARNING):
        pers = persistence(runs, same_pages(predictions(runs, loops)))
    assert "sft" not in set(pers.stage) and "fam-tiny-sft-s0-heldout@4x" in caplog.text
    assert persistence(table(*chain(0)), predictions(table(*chain(0)))).empty  # no 4x runs: an empty table


def test_runs_on_different_pages_are_refused():
    made, loops = records(0, [0], [0])
    runs = table(*made)
    with pytest.raises(ValueError, match="different documents"):
        persistence(runs, predictions(runs, loops))  # heldout@4x's pages named apart from heldout's


def test_the_report_writes_the_persistence_table_from_run_folders(tmp_path):
    store = tmp_path / "runs"
    made, loops = records(0, loops_1x=[0, 1], loops_4x=[1])
    val = chain(0, "validation", sft=(0, 4), dpo={0.1: (0, 4)})
    for s in [*made, *val]:
        d = store / s["run_id"]
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(s))
        tokens = 128 if s["eval_set"] == "heldout@4x" else 32
        (d / "config.yaml").write_text(f"generation:\n  max_new_tokens: {tokens}\n")
        (d / COMPLETE).write_text("{}")
    runs = runs_mod.load_runs(store)
    pred = same_pages(predictions(runs, loops)).assign(new_tokens=8, seconds=0.01, batch=0)
    for rid, g in pred.groupby("run_id"):
        g.to_parquet(store / rid / "predictions.parquet")
    named = report.report(runs, tmp_path / "out", "test command", with_figures=False)
    pers = named["persistence"]
    row = pers[(pers.stage == "sft") & (pers.seed == 0)].iloc[0]
    assert (row.max_new_tokens_1x, row.max_new_tokens_kx, row.n_degenerate_1x, row.n_persist) == (32, 128, 2, 1)
    assert pers[pers.stage == "dpo"].chosen.all()  # the one beta, chosen on validation
    md = (tmp_path / "out" / "persistence.md").read_text()
    assert "50.00% [9.45, 90.55]" in md  # 1 of 2 persisted, Wilson interval
    assert "persistence" in (tmp_path / "out" / "README.md").read_text()
