"""Analysis tables on small hand-built runs and predictions: seeds pooled, beta chosen on the
validation set, eval sets kept apart, runs paired within their seed."""
import json
import logging
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from degenbench.analysis import report
from degenbench.analysis import figures, runs as runs_mod, tables
from degenbench.metrics import wilson
from degenbench.stages.store import COMPLETE

matplotlib.use("Agg")


def summary(stage, *, family="fam", size="tiny", eval_set="heldout", beta=None, seed=0, n=100, k=0, cer=0.5,
            **extra):
    """A run's metrics.json as evaluation writes it (eval_set left out when None: an older run)."""
    rid = f"{family}-{size}-{stage}{f'-b{beta}' if beta else ''}-s{seed}-{eval_set}"
    s = {"run_id": rid, "family": family, "size": size, "stage": stage, "beta": beta, "seed": seed, "n_docs": n,
         "n_degenerate": k, "degeneration_rate": k / n, "degeneration_ci95": list(wilson(k, n)), "cer": cer,
         "ned": cer / 2, "score": 1 - cer, "json_valid_rate": 0.9, "new_tokens": 10 * n,
         "new_tokens_degenerate": 100 * k, "generate_seconds": 1.0, "generate_seconds_degenerate": 0.1 * k, **extra}
    return s | ({"eval_set": eval_set} if eval_set else {})


def table(*summaries, run_dirs=None):
    """The runs DataFrame, through the loaders' own row() and frame()."""
    dirs = run_dirs or [None] * len(summaries)
    return runs_mod.frame([runs_mod.row({}, s, source="local", run_dir=d) for s, d in zip(summaries, dirs)], "test")


def chain(seed=0, eval_set="heldout", sft=(10, 100), dpo=None, **kw):
    """vanilla, SFT and DPO runs of one seed on one eval set; sft: (k, n) or (k, n, cer); dpo:
    {beta: (k, n) or (k, n, cer)}."""
    out = [summary("vanilla", seed=seed, eval_set=eval_set, k=0, n=sft[1], cer=0.8, **kw),
           summary("sft", seed=seed, eval_set=eval_set, k=sft[0], n=sft[1], cer=(*sft, 0.5)[2], **kw)]
    for b, (k, n, *cer) in (dpo or {}).items():
        out.append(summary("dpo", seed=seed, eval_set=eval_set, beta=b, k=k, n=n, cer=cer[0] if cer else 0.4, **kw))
    return out


def predictions(runs, loops=None):
    """Per-document rows of each run: its first n_degenerate documents loop (or those in
    loops[run_id]); CER as the run's mean."""
    rows = []
    for r in runs.itertuples():
        bad = loops.get(r.run_id) if loops and r.run_id in loops else range(r.n_degenerate)
        rows += [{"run_id": r.run_id, "family": r.family, "size": r.size, "stage": r.stage, "beta": r.beta,
                  "doc_id": f"{r.eval_set}-d{i}", "degenerate": i in bad, "cer": r.cer} for i in range(r.n_docs)]
    return pd.DataFrame(rows)


def test_two_seeds_give_per_seed_rows_and_pooled_counts_with_a_wilson_interval():
    runs = table(*chain(0, sft=(10, 100, 0.2)), *chain(1, sft=(15, 300, 0.6)))
    st = tables.stage_table(runs)
    sft = st[st.stage == "sft"]
    assert sft.seed.tolist() == [0, 1, "pooled"] and sft.n_seeds.tolist() == [1, 1, 2]
    p = sft.iloc[-1]
    assert (p.n_docs, p.n_degenerate) == (400, 25) and p.degeneration_rate == pytest.approx(25 / 400)
    assert (p.deg_ci95_lo, p.deg_ci95_hi) == pytest.approx(wilson(25, 400))
    assert p.deg_rate_sd == pytest.approx(np.std([0.1, 0.05], ddof=1))
    assert p.cer == pytest.approx((0.2 * 100 + 0.6 * 300) / 400)  # weighted by documents, not 0.4
    assert math.isnan(p.cer_not_degenerate)  # these runs did not record it
    assert p.run_id == "fam-tiny-sft-s0-heldout,fam-tiny-sft-s1-heldout"
    assert math.isnan(sft.deg_rate_sd.iloc[0])  # a single seed has no spread
    one = tables.stage_table(table(*chain(0)))  # one seed: the pooled row repeats it, sd NaN
    assert one[one.seed == "pooled"].n_docs.tolist() == [100, 100] and one.deg_rate_sd.isna().all()


def test_cer_apart_from_loops_pools_over_the_pages_that_did_not_loop():
    runs = table(*chain(0, sft=(10, 100), cer_not_degenerate=0.1), *chain(1, sft=(50, 100), cer_not_degenerate=0.4))
    q = tables.quality(tables.stage_table(runs))
    sft = q[q.stage == "sft"].iloc[0]
    assert sft.cer_not_degenerate == pytest.approx((0.1 * 90 + 0.4 * 50) / 140)  # weighted by pages that ended


def test_beta_is_chosen_on_validation_and_reported_on_the_eval_set_even_where_another_does_better_there():
    runs = table(*chain(0, dpo={0.1: (8, 100), 0.5: (1, 100)}),  # heldout: 0.5 looks better
                 *chain(0, "validation", dpo={0.1: (2, 100), 0.5: (5, 100)}))
    choice = tables.choose_beta(runs)
    assert choice[["family", "seed", "beta", "chosen_on", "n_degenerate"]].values.tolist() == \
        [["fam", 0, 0.1, "validation", 2]]
    st = tables.stage_table(runs, choice)
    assert set(st.eval_set) == {"heldout"}  # validation chooses; it is not reported
    dpo = st[st.stage == "dpo"]
    assert dpo.beta.tolist() == [0.1, 0.1] and dpo.n_degenerate.tolist() == [8, 8]
    assert set(dpo.beta_chosen_on) == {"validation"}
    sweep = tables.beta_sweep(runs, choice)
    assert sweep[(sweep.eval_set == "heldout") & (sweep.seed == 0)].chosen.tolist() == [True, False]
    ties = table(*chain(0, "validation", dpo={0.5: (2, 100, 0.3), 0.2: (2, 100, 0.3), 0.1: (2, 100, 0.35)}))
    assert tables.choose_beta(ties).beta.tolist() == [0.2]  # same rate: lower CER, then lower beta


def test_seeds_that_choose_different_betas_pool_their_own_choices():
    runs = table(*chain(0, dpo={0.1: (3, 100), 0.5: (9, 100)}), *chain(1, dpo={0.1: (6, 100), 0.5: (2, 100)}),
                 *chain(0, "validation", dpo={0.1: (1, 50), 0.5: (4, 50)}),
                 *chain(1, "validation", dpo={0.1: (5, 50), 0.5: (0, 50)}))
    assert tables.choose_beta(runs).beta.tolist() == [0.1, 0.5]
    st = tables.stage_table(runs)
    dpo = st[st.stage == "dpo"]
    assert dpo.beta.tolist()[:2] == [0.1, 0.5] and math.isnan(dpo.beta.iloc[2])
    assert (dpo.n_degenerate.iloc[2], dpo.n_docs.iloc[2]) == (3 + 2, 200)


def test_without_validation_runs_no_beta_is_chosen_a_warning_says_so_and_every_beta_is_shown(caplog):
    runs = table(*chain(0, dpo={0.1: (8, 100), 0.5: (1, 100)}), *chain(1, dpo={0.1: (4, 100), 0.5: (3, 100)}))
    with caplog.at_level(logging.WARNING):
        choice = tables.choose_beta(runs)
    assert choice.empty and "data.validation" in caplog.text and "fam tiny seed 1" in caplog.text
    st = tables.stage_table(runs, choice)
    dpo = st[st.stage == "dpo"]
    assert dpo[["seed", "beta"]].values.tolist() == [[0, 0.1], [0, 0.5], [1, 0.1], [1, 0.5],
                                                     ["pooled", 0.1], ["pooled", 0.5]]
    assert dpo.beta_chosen_on.isna().all() and dpo.n_degenerate.tolist()[-2:] == [12, 4]
    red = tables.reductions(tables.comparisons(runs, predictions(runs), choice=choice))
    assert red[red.seed == "pooled"].beta.tolist()[:2] == [0.1, 0.5]  # every beta, none called best
    assert math.isnan(red.relative_reduction.iloc[-1])  # no chosen beta: no mean


def test_duplicate_runs_raise_naming_them():
    a = summary("sft", seed=0)
    runs = table(*chain(0), a | {"run_id": "again"})
    for f in (tables.stage_table, tables.beta_sweep, tables.choose_beta):
        with pytest.raises(ValueError, match=r"family/size/eval_set/stage/beta/seed.*stage=sft.*"
                                             r"fam-tiny-sft-s0-heldout, again"):
            f(runs)


def test_comparisons_pair_documents_within_their_seed_and_pool_seeds_as_units():
    runs = table(*chain(0, sft=(1, 10), dpo={0.1: (0, 10)}), *chain(1, sft=(0, 10), dpo={0.1: (1, 10)}),
                 *chain(0, "validation", sft=(0, 10), dpo={0.1: (0, 10)}),
                 *chain(1, "validation", sft=(0, 10), dpo={0.1: (0, 10)}))
    # the same page d0 loops under SFT in seed 0 and under DPO in seed 1
    comp = tables.comparisons(runs, predictions(runs))
    vs = comp[(comp.eval_set == "heldout") & (comp["from"] == "sft")]
    assert vs.fillna({"beta_chosen_on": "-"})[["seed", "beta_chosen_on", "loops_fixed", "loops_new", "n_docs"]] \
        .values.tolist() == [[0, "validation", 1, 0, 10], [1, "validation", 0, 1, 10],
                             ["pooled", "-", 1, 1, 20], ["pooled", "validation", 1, 1, 20]]
    assert vs.mcnemar_p.iloc[-1] == pytest.approx(1.0)
    assert vs.relative_reduction.iloc[0] == 1.0 and math.isnan(vs.relative_reduction.iloc[1])  # 0 before
    red = tables.reductions(comp)
    assert red.seed.tolist() == [0, 1, "pooled", "pooled"] and red.family.iloc[-1] == "mean"
    assert red.relative_reduction.iloc[2] == pytest.approx(0.0)  # pooled 1/20 -> 1/20
    assert set(red.eval_set) == {"heldout"}


def test_several_eval_sets_are_kept_apart():
    runs = table(*chain(0, sft=(10, 100), dpo={0.1: (5, 100)}), *chain(0, "bench2", sft=(30, 60), dpo={0.1: (6, 60)}),
                 *chain(0, "validation", sft=(1, 40), dpo={0.1: (0, 40)}))
    assert runs.eval_set.drop_duplicates().tolist() == ["heldout", "bench2", "validation"]
    st = tables.stage_table(runs)
    pooled = st[st.seed == "pooled"].set_index(["eval_set", "stage"])
    assert pooled.loc[("heldout", "sft"), "n_degenerate"] == 10 and pooled.loc[("bench2", "sft"), "n_degenerate"] == 30
    assert pooled.loc[("bench2", "dpo"), "n_docs"] == 60
    comp = tables.comparisons(runs, predictions(runs))  # bench2's pages never meet heldout's
    assert comp[comp.seed == 0].groupby("eval_set").n_docs.max().to_dict() == \
        {"bench2": 60, "heldout": 100, "validation": 40}
    red = tables.reductions(comp)
    assert red[red.family == "mean"].eval_set.tolist() == ["heldout", "bench2"]
    assert red[red.family == "mean"].relative_reduction.tolist() == pytest.approx([0.5, 0.8])
    cost = tables.cost(runs)
    assert {"size", "eval_set", "seed"} <= set(cost.columns) and len(cost) == len(runs)


def test_older_runs_count_as_heldout_and_runs_sort_by_size_eval_set_and_seed():
    runs = table(summary("sft", seed=1, size="real", eval_set="validation"), summary("sft", seed=1),
                 summary("sft", seed=0, eval_set=None), summary("vanilla", seed=0, eval_set="bench2"))
    assert runs[["size", "eval_set", "stage", "seed"]].values.tolist() == [
        ["real", "validation", "sft", 1], ["tiny", "heldout", "sft", 0], ["tiny", "heldout", "sft", 1],
        ["tiny", "bench2", "vanilla", 0]]


def test_pair_stats_read_what_each_dpo_run_recorded_and_name_those_without(tmp_path, caplog):
    stats = {"documents": 192, "candidates": 1536, "degenerate_candidates": 31, "loop_stopped_candidates": 30,
             "good_candidates": 37, "docs_with_degenerate": 8, "docs_degenerate_and_good": 6,
             "chosen_from_candidate": 6, "chosen_from_truth": 2, "pairs": 15, "family": "fam"}
    pairs = {"key": "0123456789ab", "dir": "results/artifacts/pairs/fam-0123456789ab", "stats": stats}
    made = [summary("sft"), summary("dpo", beta=0.1, pairs=pairs), summary("dpo", beta=0.5, pairs=pairs),
            summary("dpo", beta=0.5, eval_set="validation", pairs=pairs), summary("dpo", beta=1.0)]
    dirs = []
    for s in made:
        (tmp_path / s["run_id"]).mkdir()
        (tmp_path / s["run_id"] / "metrics.json").write_text(json.dumps(s))
        dirs.append(str(tmp_path / s["run_id"]))
    runs = pd.concat([table(*made, run_dirs=dirs), table(summary("dpo", beta=2.0, seed=3))])  # a W&B-like row
    with caplog.at_level(logging.WARNING):
        out = tables.pair_stats(runs)
    assert out.drop(columns=["family", "size", "key", "seeds", "n_runs"]).to_dict("records") == \
        [{k: v for k, v in stats.items() if k != "family"}]
    assert out[["family", "key", "seeds", "n_runs"]].values.tolist() == [["fam", "0123456789ab", "0", 3]]
    assert "2 of 5 DPO runs recorded no pair statistics" in caplog.text
    assert "fam-tiny-dpo-b1.0-s0-heldout" in caplog.text and "fam-tiny-dpo-b2.0-s3-heldout" in caplog.text


def test_report_from_a_store_of_two_seeds_and_two_eval_sets(tmp_path):
    """load_runs on real run folders, then every table and figure; the README says how beta is
    chosen and what pooled rows are."""
    store = tmp_path / "runs"
    made = [*chain(0, sft=(4, 40), dpo={0.1: (4, 40), 0.5: (2, 40)}),
            *chain(1, sft=(6, 100), dpo={0.1: (3, 100), 0.5: (5, 100)}),
            *chain(0, "bench2", sft=(5, 30), dpo={0.1: (1, 30), 0.5: (0, 30)}),
            *chain(0, "validation", sft=(1, 20), dpo={0.1: (0, 20), 0.5: (1, 20)}),
            *chain(1, "validation", sft=(1, 20), dpo={0.1: (2, 20), 0.5: (1, 20)})]
    made = [s | {"family": "qwen2.5-vl-3b", "run_id": "q" + s["run_id"]} for s in made]
    for s in made:
        d = store / s["run_id"]
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(s))
        (d / "config.yaml").write_text("generation:\n  max_new_tokens: 32\n")
        (d / COMPLETE).write_text("{}")
    runs = runs_mod.load_runs(store)
    pred = predictions(runs).assign(new_tokens=lambda p: np.where(p.degenerate, 32, 8), seconds=0.01, batch=0)
    for rid, g in pred.groupby("run_id"):
        g.to_parquet(store / rid / "predictions.parquet")
    named = report.report(runs, tmp_path / "out", "test command")
    assert named["beta_choice"].beta.tolist() == [0.1, 0.5]
    assert named["pairs"].empty  # none recorded here: warned, not skipped silently
    st = named["stages"]
    assert set(st.eval_set) == {"heldout", "bench2"} and st[st.seed == "pooled"].n_seeds.max() == 2
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "chosen per family, size and seed on the `validation` eval set" in readme and "`pooled`" in readme
    for f in ("degeneration", "beta", "cost", "lengths", "dpo_curves"):
        assert (tmp_path / "out" / f"{f}.png").stat().st_size > 0
    assert len(figures.degeneration(st).axes) == 2  # one panel per reported eval set
    assert len(figures.beta(named["beta_sweep"]).axes) == 6  # two per eval set, validation included


def test_pooled_comparisons_are_stratified_by_seed():
    """Pooled over seeds, McNemar's exact test is the binomial test on the discordant pairs summed
    over the seeds, and the bootstrap resamples pages within each seed."""
    from scipy.stats import binomtest

    made = [*chain(0, sft=(4, 20, 0.5), dpo={0.1: (2, 20, 0.5)}), *chain(1, sft=(5, 20, 0.5), dpo={0.1: (0, 20, 1.5)}),
            *chain(2, sft=(1, 20, 0.5), dpo={0.1: (2, 20, 1.0)})]
    loops = {"fam-tiny-sft-s0-heldout": {0, 1, 2, 3}, "fam-tiny-dpo-b0.1-s0-heldout": {0, 5},  # 3 fixed, 1 new
             "fam-tiny-sft-s1-heldout": {0, 1, 2, 3, 4}, "fam-tiny-dpo-b0.1-s1-heldout": set(),  # 5 fixed
             "fam-tiny-sft-s2-heldout": {1}, "fam-tiny-dpo-b0.1-s2-heldout": {2, 3}}  # 1 fixed, 2 new
    runs = table(*made)
    comp = tables.comparisons(runs, predictions(runs, loops), choice=tables.choose_beta(runs).iloc[:0])
    vs = comp[comp["from"] == "sft"]
    assert vs[["seed", "units", "loops_fixed", "loops_new"]].values.tolist() == [
        [0, "pages", 3, 1], [1, "pages", 5, 0], [2, "pages", 1, 2], ["pooled", "pages within seeds (stratified)", 9, 3]]
    assert vs.mcnemar_p.iloc[-1] == pytest.approx(binomtest(3, 12, 0.5).pvalue)
    for r in vs.iloc[:3].itertuples():
        assert r.mcnemar_p == pytest.approx(binomtest(r.loops_new, r.loops_fixed + r.loops_new, 0.5).pvalue)
    # each seed's CER difference is constant (0, 1, 0.5): resampled within seeds, the pooled mean cannot move
    p = vs.iloc[-1]
    assert (p.cer_diff, p.cer_diff_ci95_lo, p.cer_diff_ci95_hi) == pytest.approx((0.5, 0.5, 0.5))
