"""Artifact keys depend on exactly what changes a result; trained models are reused across
evaluation sets and across machines; TRL's config classes take any field."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from trl import DPOConfig, SFTConfig

from conftest import CHAIN, TINY, Messages, builds
from degenbench.config import compose
from degenbench.stages import store
from degenbench.stages.data import LeakError
from degenbench.stages.graph import Keys, run_job
from degenbench.stages.training import trainer_config

KINDS = ("data", "base", "sft", "candidates", "pairs", "dpo")


def keys(*overrides, stage="dpo"):
    cfg = compose(TINY + [f"stage={stage}", *overrides])
    k = Keys(cfg)
    from degenbench.documents.evalsets import eval_sets

    return {**{n: getattr(k, n) for n in KINDS}, "eval": k.eval(cfg, eval_sets(cfg, None)[0])}


BASE = keys()


@pytest.fixture
def moved_chain(chain, tmp_path):
    """A copy of the shared chain in another folder (tests that add to it work here): artifacts are
    found by key, so the moved results are reused as they are."""
    return shutil.copytree(chain.root, tmp_path / "moved", ignore=shutil.ignore_patterns("wandb", "*.lock"))


@pytest.mark.parametrize("override, changed", [
    ("seed=1", {"data", "sft", "candidates", "pairs", "dpo", "eval"}),
    ("data.validation=3", {"data", "sft", "candidates", "pairs", "dpo", "eval"}),
    ("family.sizes.tiny.max_pixels=200704", {"base", "sft", "candidates", "pairs", "dpo", "eval"}),
    ("sft.trainer.learning_rate=0.001", {"sft", "candidates", "pairs", "dpo", "eval"}),
    ("+sft.trainer.optim=adafactor", {"sft", "candidates", "pairs", "dpo", "eval"}),
    ("sft.lora.r=8", {"sft", "candidates", "pairs", "dpo", "eval"}),
    ("device=cuda", {"sft", "candidates", "pairs", "dpo", "eval"}),  # another device, another result
    ("accelerate.num_processes=2", {"sft", "candidates", "pairs", "dpo", "eval"}),
    ("sampling.temperature=0.5", {"candidates", "pairs", "dpo", "eval"}),
    ("judge.min_score=0.5", {"pairs", "dpo", "eval"}),
    ("pairs.rejected=worst", {"pairs", "dpo", "eval"}),
    ("metrics.tail_chars=10", {"candidates", "pairs", "dpo", "eval"}),  # sampling's LoopStop uses the rule
    ("dpo.beta=0.5", {"dpo", "eval"}),
    ("dpo.trainer.loss_type=[ipo]", {"dpo", "eval"}),
    ("generation.batch_size=2", {"eval"}),
    ("data.teacher_loops=0.1", {"sft", "candidates", "pairs", "dpo", "eval"}),  # SFT's labels, not the pages
    ("data.teacher_loops={qwen2.5-vl-3b:0.1,gemma-3-4b:0}", {"sft", "candidates", "pairs", "dpo", "eval"}),
])
def test_each_result_defining_setting_changes_its_key_and_those_after_it(override, changed):
    new = keys(override)
    assert {k for k in BASE if new[k] != BASE[k]} == changed


@pytest.mark.parametrize("override", [
    "paths.cache_dir=/home/someone-else/.cache/degenbench", "paths.results_dir=/elsewhere",
    "sft.trainer.logging_steps=1", "dpo.trainer.logging_steps=1", "sft.trainer.dataloader_num_workers=2",
    "checkpoint.save_steps=7", "checkpoint.save_total_limit=3", "logger=offline", "logger.tags=[x]",
    "dpo.on_no_pairs=sft", "eval=[heldout,validation]", "run_name=mine",
    "data.teacher_loop_tokens=5000",  # without teacher loops (share 0) nothing changes
    "data.teacher_loops={qwen2.5-vl-3b:0,gemma-3-4b:0.2}",  # another family's share
])
def test_settings_that_do_not_change_a_result_leave_every_key(override):
    assert keys(override) == BASE


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_a_second_home_rebuilds_nothing(chain):
    """Another user's $HOME (another cache folder) on the same results: every artifact and run is
    reused, nothing is built or evaluated."""
    env = {k: v for k, v in os.environ.items() if k != "DEGENBENCH_CACHE"} | {"HOME": str(chain.root / "other-home")}
    cmd = [sys.executable, "-m", "degenbench", *CHAIN, f"paths.results_dir={chain.root}", "stage=dpo", "dpo.beta=0.1"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr  # Hydra logs to stdout
    assert out.returncode == 0, log[-3000:]
    assert "BUILD" not in log and log.count("DONE") == 2, log[-3000:]



def test_a_changed_result_defining_setting_rebuilds_from_there(moved_chain):
    with Messages() as messages:
        run_job(compose(CHAIN + [f"paths.results_dir={moved_chain}", "stage=sft", "eval=[heldout]"]))
        assert not builds(messages) and any(m.startswith("DONE") for m in messages)  # moved: all reused
        run_job(compose(CHAIN + [f"paths.results_dir={moved_chain}", "stage=sft", "sft.trainer.learning_rate=0.0001",
                                 "eval=[heldout]"]))
    assert builds(messages) == ["sft"]


def test_a_trained_model_is_evaluated_on_another_set_without_retraining(chain, moved_chain):
    """A second evaluation set (synthetic pages of another seed, mostly loop bait): DPO's model and
    its prerequisites are reused, only the new set is evaluated."""
    bait = "{name:bait,source:synthetic,seed:5,n_docs:6,repetitive:0.8}"
    with Messages() as messages:
        run = run_job(compose(CHAIN + [f"paths.results_dir={moved_chain}", "stage=dpo", "dpo.beta=0.1",
                                       f"eval=[heldout,{bait}]"]))
    assert not builds(messages), messages
    evaluated = [m for m in messages if m.startswith("run ")]
    assert len(evaluated) == 1 and "-bait-" in evaluated[0]  # the held-out run was DONE already
    assert run.name == chain.runs["dpo-0.1"].name
    (bait_run,) = (moved_chain / "runs").glob("*-dpo-b0.1-bait-*")
    metrics = json.loads((bait_run / "metrics.json").read_text())
    held = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_set"] == "bait" and metrics["n_docs"] == 6 and store.is_complete(bait_run)
    assert metrics["keys"] == held["keys"] and metrics["model_dir"].endswith(held["model_dir"].split("/chain0/")[1])


def test_an_evaluation_set_holding_a_training_page_fails_the_job(moved_chain, tmp_path):
    """Another source that contains a training page, under another id, is refused by content."""
    from degenbench.documents import load_split

    cfg = compose(CHAIN + [f"paths.results_dir={moved_chain}", "stage=sft"])
    page = load_split(cfg.data, cfg.seed).train[0]
    page.image.save(tmp_path / "copy.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "renamed", "image": "copy.png", "truth": page.truth}) + "\n")
    with pytest.raises(LeakError, match=r"eval set 'm'.*\('renamed', '" + page.id):
        run_job(compose(CHAIN + [f"paths.results_dir={moved_chain}", "stage=sft", f"eval=[heldout,manifest:{tmp_path / 'm.jsonl'}]"]))
    same_ids = "{name:same,source:synthetic,seed:0,n_docs:12}"  # the training source itself
    with pytest.raises(LeakError, match="document.s. of eval set 'same' are training pages"):
        run_job(compose(CHAIN + [f"paths.results_dir={moved_chain}", "stage=sft", f"eval=[{same_ids}]"]))


def test_any_trl_field_passes_through_and_trl_validates_it(tmp_path):
    cfg = compose(TINY + ["+sft.trainer.optim=adamw_torch_fused", "+sft.trainer.max_grad_norm=0.5",
                          "dpo.trainer.loss_type=[sigmoid,sft]", "dpo.trainer.loss_weights=[1.0,0.5]"])
    sft = trainer_config(SFTConfig, cfg, cfg.sft.trainer, tmp_path, [])
    assert (sft.optim, sft.max_grad_norm, sft.completion_only_loss, sft.max_length) == ("adamw_torch_fused", 0.5, True, None)
    assert (sft.seed, sft.save_steps, sft.use_cpu, sft.bf16) == (cfg.seed, cfg.checkpoint.save_steps, True, False)
    dpo = trainer_config(DPOConfig, cfg, cfg.dpo.trainer, tmp_path, [])
    assert (dpo.beta, dpo.loss_type, dpo.loss_weights) == (0.1, ["sigmoid", "sft"], [1.0, 0.5])
    bad = compose(TINY + ["+sft.trainer.no_such_field=1"])
    with pytest.raises(ValueError, match="sft.trainer.*no_such_field"):
        trainer_config(SFTConfig, bad, bad.sft.trainer, tmp_path, [])
    with pytest.raises(ValueError, match="adamw_nonsense"):  # TRL's own validation
        cfg = compose(TINY + ["+sft.trainer.optim=adamw_nonsense"])
        trainer_config(SFTConfig, cfg, cfg.sft.trainer, tmp_path, [])
    seeded = compose(TINY + ["+sft.trainer.seed=3"])
    with pytest.raises(ValueError, match=r"\['seed'\] are set by degenbench"):
        trainer_config(SFTConfig, seeded, seeded.sft.trainer, tmp_path, [])


def test_a_local_checkpoint_is_keyed_by_what_it_holds_not_where_it_lies(tmp_path):
    from degenbench.config import PACKAGE

    a, b = (shutil.copytree(PACKAGE / "standins" / "qwen2.5-vl-3b", tmp_path / d) for d in ("a", "elsewhere/b"))
    key = lambda d: Keys(compose(TINY + ["family.size=real", f"family.sizes.real.pretrained={d}"])).base  # noqa: E731
    assert key(a) == key(b)
    (b / "chat_template.jinja").write_text((b / "chat_template.jinja").read_text() + "\n")
    assert key(a) != key(b)


def test_the_toys_jobs_are_keyed_as_its_committed_results():
    """Every run folder the toy's sweep would write is one of results/toy/runs: a change of code
    that moves a key (a refactor, a renamed config) fails here until the results are regenerated."""
    from conftest import grid
    from degenbench import sweep
    from degenbench.stages.graph import run_dirs

    committed = {p.name for p in (Path(__file__).parents[1] / "results" / "toy" / "runs").iterdir()}
    jobs = grid("experiment=toy")
    # the grid's 26 jobs that can differ: every DPO job, the others at one beta, the references for one
    # family (that the sweep leaves the other 34 out is tests/test_sweeps.py's): a third of the composes
    first = {k: next(o for o in jobs[0] if o.startswith(k)) for k in ("dpo.beta=", "family=")}
    jobs = [j for j in jobs if "stage=dpo" in j or first["dpo.beta="] in j and ("stage=reference" not in j or first["family="] in j)]
    configs = {}  # each job composed once: the sweep's check, then its run folders
    kept, dropped = sweep.distinct(jobs, lambda o: configs.setdefault(tuple(o), compose(list(o))))
    planned = [d.name for job in kept for d in run_dirs(configs[tuple(job)])]
    assert len(kept) == 26 and not dropped and len(planned) == 71 and set(planned) == committed
