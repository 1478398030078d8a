"""Training stages on a tiny stand-in: SFT -> candidates -> pairs -> DPO, cached and guarded."""
import json
import logging

import datasets
import pandas as pd
import pytest
import torch
from trl import DPOConfig, DPOTrainer

from conftest import CHAIN, TINY, Messages, builds
from degenbench.config import compose
from degenbench.stages import store
from degenbench.models.families import load_trained
from degenbench.stages.training import MODEL_DIR
from degenbench.stages.data import LeakError
from degenbench.stages.dpo import LogpsWatch
from degenbench.stages.graph import run_job
from degenbench.stages.pairs import _rejected

def artifact(root, kind):
    """The one artifact of `kind` under `root` (lock files beside it do not count)."""
    (path,) = [p for p in (root / "artifacts" / kind).iterdir() if p.is_dir()]
    return path


def test_beta_sweep_builds_prerequisites_once(chain):
    """vanilla, SFT, DPO 0.1, DPO 0.5: SFT, candidates and pairs once, DPO once per beta."""
    assert builds(chain.messages) == ["sft", "candidates", "pairs", "dpo", "dpo"]
    runs = [chain.runs["dpo-0.1"], chain.runs["dpo-0.5"]]
    assert len({r.name for r in runs}) == 2 and all(store.is_complete(r) for r in runs)
    assert [json.loads((r / "metrics.json").read_text())["beta"] for r in runs] == [0.1, 0.5]


def test_rerunning_a_finished_job_does_nothing(chain):
    with Messages() as messages:
        assert run_job(chain.cfgs["dpo-0.5"]) == chain.runs["dpo-0.5"]
    assert not builds(messages) and not any(m.startswith("run ") for m in messages)
    assert sum(m.startswith("DONE") for m in messages) == 2  # the held-out and the validation run


def test_pair_dataset_loads_in_dpo_trainer_unchanged_and_stats_add_up(chain, tmp_path):
    root, cfg = chain.root, chain.cfgs["dpo-0.1"]
    pairs_dir = artifact(root, "pairs")
    stats = json.loads((pairs_dir / "stats.json").read_text())
    ds = datasets.load_from_disk(str(pairs_dir / "dataset"))
    judged = pd.read_parquet(pairs_dir / "judged.parquet")
    assert stats["documents"] == 6 and stats["candidates"] == 6 * 2 == len(judged)  # 12 - 4 held out - 2 validation
    assert stats["docs_with_degenerate"] + stats["docs_without_degenerate"] == stats["documents"]
    assert stats["degenerate_candidates"] == judged["degenerate"].sum()
    assert stats["pairs"] == len(ds) <= stats["documents"] * cfg.pairs.max_pairs_per_doc
    assert stats["chosen_from_candidate"] + stats["chosen_from_truth"] == stats["docs_with_pairs"]
    assert stats["docs_with_pairs"] == len(set(ds["doc_id"]))
    assert {"images", "prompt", "chosen", "rejected"} <= set(ds.column_names)

    sft_dir = artifact(root, "sft")
    model, processor = load_trained(cfg.family, cfg.device, sft_dir / MODEL_DIR, trainable=True)
    args = DPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2,
                     use_cpu=True, bf16=False, activation_checkpointing=False, max_length=None,
                     report_to=[], logging_steps=1)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=processor)
    trainer.train()
    assert "logps/chosen" in trainer.state.log_history[0]


def test_evaluated_documents_never_enter_training(chain):
    root, runs = chain.root, chain.runs
    evaluated = {name: set(json.loads((d / "heldout_ids.json").read_text()))
                 for d in (root / "runs").iterdir() for name in ("heldout", "validation") if f"-{name}-" in d.name}
    assert len(evaluated["heldout"]) == 4 and len(evaluated["validation"]) == 2
    sft_dir, pairs_dir = artifact(root, "sft"), artifact(root, "pairs")
    record = json.loads((sft_dir / store.COMPLETE).read_text())
    for ids in evaluated.values():
        assert not ids & set(record["doc_ids"])
        assert not ids & set(datasets.load_from_disk(str(pairs_dir / "dataset"))["doc_id"])
    # a tampered SFT artifact that trained on a validation page fails the job
    original = (sft_dir / store.COMPLETE).read_text()
    record["doc_ids"].append(sorted(evaluated["validation"])[0])
    (sft_dir / store.COMPLETE).write_text(json.dumps(record))
    try:
        with pytest.raises(LeakError, match="1 validation document"):
            run_job(compose(CHAIN + [f"paths.results_dir={root}", "stage=dpo", "dpo.beta=0.3"]))
    finally:  # the chain is shared with later tests
        (sft_dir / store.COMPLETE).write_text(original)


def test_rejected_strategies():
    g = pd.DataFrame({"text": ["loop", "bad", "ok", "best"], "degenerate": [True, False, False, False],
                      "quality": [0.1, 0.2, 0.7, 0.95], "good": [False, False, False, True]})
    assert _rejected(g, 0.95, "degenerate", 2)["text"].tolist() == ["loop"]
    assert _rejected(g, 0.95, "worst", 2)["text"].tolist() == ["loop", "bad"]
    assert _rejected(g, 0.95, "mixed", 3)["text"].tolist() == ["loop", "bad", "ok"]
    assert _rejected(g[g.text != "loop"], 0.95, "degenerate", 2).empty
    with pytest.raises(ValueError, match="pairs.rejected='best'"):
        _rejected(g, 0.95, "best", 1)


def test_logps_watch_warns_when_chosen_logps_fall(caplog):
    watch = LogpsWatch()
    for v in (-50.0, -52.0, -60.0):
        watch.on_log(None, None, None, logs={"logps/chosen": v})
    with caplog.at_level(logging.WARNING):
        watch.on_train_end(None, None, None)
    assert "logps/chosen fell during DPO, -50.000 -> -60.000" in caplog.text
    rising = LogpsWatch()
    for v in (-60.0, -50.0):
        rising.on_log(None, None, None, logs={"logps/chosen": v})
    caplog.clear()
    rising.on_train_end(None, None, None)
    assert "fell" not in caplog.text


def test_report_pairs_each_dpo_run_with_its_sft_run_by_document(chain):
    from degenbench.analysis import comparisons, load_predictions, load_runs, pair_stats

    table = load_runs(chain.root / "runs")
    held = table[table.eval_set == "heldout"]
    assert list(zip(held.stage, held.beta.fillna(0))) == [("vanilla", 0), ("sft", 0), ("dpo", 0.1), ("dpo", 0.5)]
    assert (table.deg_ci95_lo <= table.degeneration_rate).all()
    assert (table.degeneration_rate <= table.deg_ci95_hi).all()
    vs = comparisons(table, load_predictions(table))
    dpo = vs[(vs["from"] == "sft") & (vs.eval_set == "heldout") & (vs.seed.astype(str) == "0")]
    assert list(dpo.beta) == [0.1, 0.5] and dpo.mcnemar_p.between(0, 1).all()
    n = held.set_index(held.stage + held.beta.fillna(0).astype(str)).n_degenerate
    assert (dpo.loops_fixed - dpo.loops_new).tolist() == [n["sft0.0"] - n["dpo0.1"], n["sft0.0"] - n["dpo0.5"]]
    stats = json.loads((artifact(chain.root, "pairs") / "stats.json").read_text())
    pairs = pair_stats(table)  # what each DPO run recorded: the one pair set behind both betas
    assert pairs.family.tolist() == ["qwen2.5-vl-3b"] and pairs.pairs.tolist() == [stats["pairs"]]


@pytest.mark.slow  # minutes on 2 cores: .ci/run runs it with the slow tests
def test_dpo_without_pairs_fails_clearly_or_evaluates_sft_as_recorded(tmp_path):
    """No rejectable candidate (a rule no output can meet): the default names the pairs folder and
    the ways out; dpo.on_no_pairs=sft evaluates the SFT model unchanged and says so in metrics."""
    never = TINY + [f"paths.results_dir={tmp_path}", "pairs.rejected=degenerate", "metrics.min_repeats=1000"]
    with pytest.raises(ValueError, match=r"holds no pairs .* dpo.on_no_pairs=sft"):
        run_job(compose(never + ["stage=dpo"]))
    assert json.loads((artifact(tmp_path, "pairs") / "stats.json").read_text())["pairs"] == 0
    run = run_job(compose(never + ["stage=dpo", "dpo.on_no_pairs=sft"]))
    metrics = json.loads((run / "metrics.json").read_text())
    assert "holds no pairs" in metrics["dpo_skipped"] and not (tmp_path / "artifacts" / "dpo").exists()
    assert metrics["model_dir"] == str(artifact(tmp_path, "sft") / MODEL_DIR)
    assert "reused" not in metrics  # the first evaluation of the SFT model generates
    # the SFT job and another beta evaluate the same model: keyed alike, they take these rows
    sft, other = run_job(compose(never + ["stage=sft"])), run_job(compose(never + ["stage=dpo", "dpo.beta=0.5",
                                                                                  "dpo.on_no_pairs=sft"]))
    for again in (sft, other):
        m = json.loads((again / "metrics.json").read_text())
        assert m["reused"] == {"from": run.name, "pages": metrics["n_docs"], "generated": 0}
        assert m["keys"]["model"] == metrics["keys"]["model"] == metrics["keys"]["sft"]
        assert again.name.rsplit("-", 1)[1] == run.name.rsplit("-", 1)[1]  # one evaluation key
    same = ["doc_id", "prediction", "degenerate", "cer"]
    pd.testing.assert_frame_equal(pd.read_parquet(run / "predictions.parquet", columns=same),
                                  pd.read_parquet(sft / "predictions.parquet", columns=same))
    assert json.loads((sft / "metrics.json").read_text())["stage"] == "sft"
    with Messages() as messages:  # done: a rerun finds its runs before loading anything
        assert run_job(compose(never + ["stage=dpo", "dpo.on_no_pairs=sft"])) == run
    assert messages and all(m.startswith("DONE") for m in messages), messages


def test_sft_from_given_weights_starts_there_not_at_the_base(chain, tmp_path):
    # the looping organism of benchmarks/ fine-tunes an SFT model further: train_sft(init=...)
    from safetensors.torch import load_file

    from degenbench.documents import load_split
    from degenbench.stages.sft import train_sft

    sft = artifact(chain.root, "sft") / MODEL_DIR
    cfg = compose(TINY + [f"paths.results_dir={tmp_path}", "sft.trainer.max_steps=1", "sft.trainer.learning_rate=0"])
    train = load_split(cfg.data, cfg.seed).train
    for name, init in [("again", sft), ("base", None)]:
        train_sft(cfg, train[:2], tmp_path / name, init=init)
    sft_w, again, base = (load_file(p / "model.safetensors")
                          for p in [sft, tmp_path / "again" / MODEL_DIR, tmp_path / "base" / MODEL_DIR])
    assert sft_w.keys() == again.keys() == base.keys()
    assert all(torch.equal(sft_w[k], again[k]) for k in sft_w)  # lr 0: exactly the weights it started from
    assert not all(torch.equal(sft_w[k], base[k]) for k in sft_w)  # which are not the base's


def test_gradient_accumulation_trains_as_one_batch_of_the_same_rows(tmp_path):
    """SFT over two rows of different answer lengths: both at once and 1 x 2 accumulated give the
    same first-step loss and gradient (the token mean over both rows). Qwen2.5-VL says it takes no
    loss kwargs, so without degenbench's Trainer counting the tokens, 1 x 2 would weigh each row's
    own mean the same (measured: loss 5.93 against 3.59 on the toy's teacher-loop batch of 6)."""
    from degenbench.documents import load_split
    from degenbench.stages.sft import train_sft

    steps = {}
    for bs, ga in [(2, 1), (1, 2)]:
        cfg = compose(TINY + [f"paths.results_dir={tmp_path}", "sft.trainer.max_steps=1", "sft.trainer.logging_steps=1",
                              f"sft.trainer.per_device_train_batch_size={bs}",
                              f"sft.trainer.gradient_accumulation_steps={ga}"])
        train = load_split(cfg.data, cfg.seed).train[:2]
        record = train_sft(cfg, train, tmp_path / f"{bs}x{ga}")
        (first,) = [e for e in record["log_history"] if "loss" in e]
        steps[bs, ga] = first["loss"], first["grad_norm"]
    assert len({len(d.answer) for d in train}) > 1  # rows of unequal length: a mean of means would differ
    for loss, norm in steps.values():
        assert loss == pytest.approx(steps[2, 1][0], rel=1e-5) and norm == pytest.approx(steps[2, 1][1], rel=1e-4)
