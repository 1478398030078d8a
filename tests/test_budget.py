"""Evaluation at a multiple of the token budget (`heldout@4x`): the same documents and trained
model, its own evaluation key and runs, the budget recorded."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import CHAIN, TINY, Messages, builds
from degenbench.analysis.persistence import persistence
from degenbench.analysis.runs import load_predictions, load_runs
from degenbench.config import compose
from degenbench.documents.evalsets import eval_sets, split_budget
from degenbench.stages.data import LeakError
from degenbench.stages.graph import Keys, run_job


def sets(*entries, overrides=()):
    cfg = compose(TINY + [f"eval=[{','.join(entries)}]", *overrides])
    return cfg, {s.name: s for s in eval_sets(cfg, None)}


def test_a_budget_names_the_set_and_keeps_its_documents():
    cfg, got = sets("heldout", "heldout@4x", "validation@2.5x", "{name:bait,source:synthetic,seed:5,budget:3}")
    assert list(got) == ["heldout", "heldout@4x", "validation@2.5x", "bait@3x"]
    assert [(s.base, s.budget) for s in got.values()] == [("heldout", 1), ("heldout", 4), ("validation", 2.5), ("bait", 3)]
    assert got["heldout@4x"].identity == got["heldout"].identity and not got["heldout@4x"].external
    assert got["bait@3x"].external
    assert split_budget("heldout@4x") == ("heldout", 4.0) and split_budget("heldout") == ("heldout", 1.0)


def test_the_budget_is_in_the_evaluation_key_and_nowhere_else():
    cfg, got = sets("heldout", "heldout@4x", "heldout@8x")
    keys = Keys(cfg)
    assert len({keys.eval(cfg, s) for s in got.values()}) == 3  # a changed multiplier re-evaluates
    mapped, m = sets("{source:heldout,budget:4}")  # the mapping form is the same set
    assert list(m) == ["heldout@4x"] and Keys(mapped).eval(mapped, m["heldout@4x"]) == keys.eval(cfg, got["heldout@4x"])
    assert Keys(compose(TINY + ["eval=[heldout,heldout@4x]"])).record() == Keys(compose(TINY)).record()
    # 4x the budget is 4x the budget, however it is asked for: data.max_new_tokens x 4
    as_tokens = compose(TINY + ["generation.max_new_tokens=96"])
    assert keys.eval(cfg, got["heldout@4x"]) == Keys(as_tokens).eval(as_tokens, eval_sets(as_tokens, None)[0])


@pytest.mark.parametrize("entry, error", [
    ("{source:heldout,budget:0}", "budget=0 must be a number > 0"),
    ("{source:heldout,budget:4,seed:3}", "a split .heldout. takes only `budget`"),
])
def test_a_bad_budget_is_an_error_naming_it(entry, error):
    with pytest.raises(ValueError, match=error):
        sets(entry)


def test_two_entries_at_one_budget_collide():
    with pytest.raises(ValueError, match="two sets named alike"):
        sets("heldout@4x", "{source:heldout,budget:4}")


@pytest.fixture
def moved_chain(chain, tmp_path):
    return shutil.copytree(chain.root, tmp_path / "moved", ignore=shutil.ignore_patterns("wandb", "*.lock"))


def test_the_trained_model_is_evaluated_at_4x_without_retraining(chain, moved_chain):
    cfg = compose(CHAIN + [f"paths.results_dir={moved_chain}", "stage=sft", "eval=[heldout,heldout@4x]"])
    with Messages() as messages:
        run_job(cfg)
    assert not builds(messages), messages  # the SFT model is reused
    evaluated = [m for m in messages if m.startswith("run ")]
    assert len(evaluated) == 1 and "-heldout@4x-" in evaluated[0]  # heldout was DONE already
    (one,) = (moved_chain / "runs").glob("*-sft-heldout-*")
    (four,) = (moved_chain / "runs").glob("*-sft-heldout@4x-*")
    m1, m4 = (json.loads((d / "metrics.json").read_text()) for d in (one, four))
    assert m4["eval_set"] == "heldout@4x" and m4["keys"] == m1["keys"]
    assert Path(m4["model_dir"]).parts[-3:] == Path(m1["model_dir"]).parts[-3:]  # sft/<family>-<key>/model
    assert m4["budget"] == {"multiplier": 4.0, "base_set": "heldout", "max_new_tokens": 4 * cfg.data.max_new_tokens}
    assert m4["decoding"]["applied"]["max_new_tokens"] == 4 * cfg.data.max_new_tokens
    assert one.name.rsplit("-", 1)[1] != four.name.rsplit("-", 1)[1]  # its own evaluation key
    assert json.loads((four / "heldout_ids.json").read_text()) == json.loads((one / "heldout_ids.json").read_text())
    assert pd.read_parquet(four / "predictions.parquet").new_tokens.max() <= 4 * cfg.data.max_new_tokens
    assert "max_new_tokens: 96" in (four / "config.yaml").read_text()
    # greedy: a page that ended before the 1x limit ends there at 4x too; only the others are generated
    p1, p4 = (pd.read_parquet(d / "predictions.parquet").set_index("doc_id") for d in (one, four))
    ended = p1.index[~p1.hit_limit]
    assert m4["reused"] == {"from": one.name, "pages": len(ended), "generated": len(p1) - len(ended)}
    assert list(p4.index) == list(p1.index) and p4.loc[ended, "prediction"].equals(p1.loc[ended, "prediction"])
    # ... as generating every page again at 4x shows (reuse off: all generated, the same outputs)
    fresh = shutil.copytree(moved_chain, moved_chain.parent / "fresh", ignore=shutil.ignore_patterns("*@4x*"))
    run_job(compose(CHAIN + [f"paths.results_dir={fresh}", "stage=sft", "eval=[heldout,heldout@4x]",
                             "generation.reuse_budget=false"]))
    (again,) = (fresh / "runs").glob("*-sft-heldout@4x-*")
    assert again.name == four.name  # reuse is not in the key: it gives the same outputs
    assert "reused" not in json.loads((again / "metrics.json").read_text())
    assert pd.read_parquet(again / "predictions.parquet").set_index("doc_id").prediction.equals(p4.prediction)
    runs = load_runs(moved_chain / "runs")  # the persistence table on these run records
    sft = runs[runs.stage == "sft"]
    (row,) = persistence(sft, load_predictions(sft)).query("seed == 0").itertuples()
    assert (row.eval_set, row.budget, row.max_new_tokens_1x, row.max_new_tokens_kx, row.n_docs) == ("heldout", 4, 24, 96, 4)
    assert row.n_persist + row.n_recovered == row.n_degenerate_1x == m1["n_degenerate"]
    assert row.n_degenerate_kx == m4["n_degenerate"]


def test_a_budget_set_holding_a_training_page_fails_the_job(moved_chain):
    """The leakage guard sees a set at 4x as the documents of its base set."""
    same = "{name:same,source:synthetic,seed:0,n_docs:12,budget:4}"  # the training source itself
    with pytest.raises(LeakError, match="same@4x"):
        run_job(compose(CHAIN + [f"paths.results_dir={moved_chain}", "stage=sft", f"eval=[{same}]"]))
