"""Training stages on a tiny stand-in: SFT -> candidates -> pairs -> DPO, cached and guarded."""
import json
import logging
import time

import datasets
import pandas as pd
import pytest
import torch
from trl import DPOConfig, DPOTrainer

from degenbench.config import compose
from degenbench.stages import store
from degenbench.stages.common import MODEL_DIR, load_trained
from degenbench.stages.data import LeakError
from degenbench.stages.dpo import LogpsWatch
from degenbench.stages.graph import run_job
from degenbench.stages.pairs import _rejected

TINY = ["family=qwen2.5-vl-3b", "logger=disabled", "device=cpu", "data.n_docs=12", "data.heldout=4",
        "data.max_new_tokens=24", "sft.method=full", "sft.max_steps=2", "sft.batch_size=2",
        "sampling.n=2", "sampling.batch_size=4", "pairs.rejected=mixed", "dpo.max_steps=1",
        "dpo.batch_size=2", "generation.batch_size=4"]


def artifact(root, kind):
    """The one artifact of `kind` under `root` (lock files beside it do not count)."""
    (path,) = [p for p in (root / "artifacts" / kind).iterdir() if p.is_dir()]
    return path


@pytest.fixture(scope="module")
def beta_sweep(tmp_path_factory):
    """Two DPO jobs (beta 0.1, 0.5) sharing SFT, candidates and pairs."""
    root = tmp_path_factory.mktemp("sweep")
    cfgs = [compose(TINY + [f"paths.results_dir={root}", "stage=dpo", f"dpo.beta={b}"]) for b in (0.1, 0.5)]
    handler = logging.Handler()
    records = []
    handler.emit = records.append
    logging.getLogger("degenbench").addHandler(handler)
    logging.getLogger("degenbench").setLevel(logging.INFO)
    try:
        runs = [run_job(c) for c in cfgs]
    finally:
        logging.getLogger("degenbench").removeHandler(handler)
    return root, cfgs, runs, [r.getMessage() for r in records]


def test_beta_sweep_builds_prerequisites_once(beta_sweep):
    root, _, runs, messages = beta_sweep
    builds = [m.split()[1] for m in messages if m.startswith("BUILD ")]
    assert builds.count("sft") == 1 and builds.count("candidates") == 1 and builds.count("pairs") == 1
    assert builds.count("dpo") == 2
    assert len({r.name for r in runs}) == 2 and all(store.is_complete(r) for r in runs)
    assert [json.loads((r / "metrics.json").read_text())["beta"] for r in runs] == [0.1, 0.5]


def test_rerunning_a_finished_job_does_nothing(beta_sweep, caplog):
    _, cfgs, runs, _ = beta_sweep
    caplog.set_level(logging.INFO, logger="degenbench")
    start = time.perf_counter()
    assert run_job(cfgs[1]) == runs[1]
    assert time.perf_counter() - start < 10
    messages = [r.getMessage() for r in caplog.records]
    assert not any(m.startswith("BUILD") for m in messages)
    assert any(m.startswith("DONE") for m in messages)


def test_pair_dataset_loads_in_dpo_trainer_unchanged_and_stats_add_up(beta_sweep, tmp_path):
    root, cfgs, _, _ = beta_sweep
    pairs_dir = artifact(root, "pairs")
    stats = json.loads((pairs_dir / "stats.json").read_text())
    ds = datasets.load_from_disk(str(pairs_dir / "dataset"))
    judged = pd.read_parquet(pairs_dir / "judged.parquet")
    assert stats["documents"] == 8 and stats["candidates"] == 8 * 2 == len(judged)
    assert stats["docs_with_degenerate"] + stats["docs_without_degenerate"] == stats["documents"]
    assert stats["degenerate_candidates"] == judged["degenerate"].sum()
    assert stats["pairs"] == len(ds) <= stats["documents"] * cfgs[0].pairs.max_pairs_per_doc
    assert stats["chosen_from_candidate"] + stats["chosen_from_truth"] == stats["docs_with_pairs"]
    assert stats["docs_with_pairs"] == len(set(ds["doc_id"]))
    assert {"images", "prompt", "chosen", "rejected"} <= set(ds.column_names)

    sft_dir = artifact(root, "sft")
    model, processor = load_trained(cfgs[0], sft_dir / MODEL_DIR, trainable=True)
    args = DPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2,
                     use_cpu=True, bf16=False, activation_checkpointing=False, max_length=None,
                     report_to=[], logging_steps=1)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=processor)
    trainer.train()
    assert "logps/chosen" in trainer.state.log_history[0]


def test_heldout_documents_never_enter_training(beta_sweep):
    root, cfgs, runs, _ = beta_sweep
    held = set(json.loads((runs[0] / "heldout_ids.json").read_text()))
    sft_dir = artifact(root, "sft")
    pairs_dir = artifact(root, "pairs")
    record = json.loads((sft_dir / store.COMPLETE).read_text())
    assert not held & set(record["doc_ids"])
    assert not held & set(datasets.load_from_disk(str(pairs_dir / "dataset"))["doc_id"])
    # a tampered SFT artifact that trained on a held-out page fails the job
    original = (sft_dir / store.COMPLETE).read_text()
    record["doc_ids"].append(sorted(held)[0])
    (sft_dir / store.COMPLETE).write_text(json.dumps(record))
    try:
        with pytest.raises(LeakError, match="1 held-out document"):
            run_job(compose(TINY + [f"paths.results_dir={root}", "stage=sft"]))
    finally:  # the sweep fixture is shared with later tests
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


def test_llm_judge_scores_with_a_local_causal_lm(tmp_path, caplog):
    """The LLM-judge interface on a tiny offline causal LM: every candidate gets a quality in
    [0, 1]; replies without a number are counted, not dropped."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from degenbench.documents import synthetic
    from degenbench.stages.judge import judge_candidates
    from degenbench.standins import train_tokenizer

    tok = train_tokenizer("qwen2_5_vl", 512, seed=0)
    config = AutoConfig.for_model("qwen2", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    cfg = compose(TINY + ["judge=llm", f"judge.model={tmp_path / 'judge'}"])
    docs = {d.id: d for d in synthetic.generate(2, seed=0)}
    cands = pd.DataFrame({"doc_id": list(docs) * 2, "candidate": [0, 0, 1, 1], "hit_limit": [False] * 4,
                          "text": [d.answer for d in docs.values()] + ["x" * 40] * 2})
    with caplog.at_level(logging.WARNING):
        judged = judge_candidates(cfg, docs, cands)
    assert judged["quality"].between(0, 1).all() and len(judged) == 4
    assert judged["json_valid"].tolist() == [True, True, False, False]
    assert not judged["good"][2:].any()  # invalid JSON is never chosen
    if (judged["quality"] == 0).all():
        assert "LLM judge gave no score for" in caplog.text


def test_report_pairs_each_dpo_run_with_its_sft_run_by_document(beta_sweep):
    from degenbench.analysis import comparisons, load_predictions, load_runs, pair_stats

    root, cfgs, _, _ = beta_sweep
    run_job(compose(TINY + [f"paths.results_dir={root}", "stage=sft"]))  # reuses the SFT model
    table = load_runs(root / "runs")
    assert list(zip(table.stage, table.beta.fillna(0))) == [("sft", 0), ("dpo", 0.1), ("dpo", 0.5)]
    assert (table.deg_ci95_lo <= table.degeneration_rate).all()
    assert (table.degeneration_rate <= table.deg_ci95_hi).all()
    vs = comparisons(table, load_predictions(table))
    assert list(vs.beta) == [0.1, 0.5] and vs.mcnemar_p.between(0, 1).all()
    n = table.n_degenerate.tolist()
    assert (vs.loops_fixed - vs.loops_new).tolist() == [n[0] - n[1], n[0] - n[2]]
    pairs = pair_stats(root / "artifacts", table)
    assert pairs.family.tolist() == ["qwen2.5-vl-3b"] and pairs.pairs.iloc[0] >= 0


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
    sft = run_job(compose(never + ["stage=sft"]))
    same = ["prediction", "degenerate"]
    pd.testing.assert_frame_equal(pd.read_parquet(run / "predictions.parquet", columns=same),
                                  pd.read_parquet(sft / "predictions.parquet", columns=same))


def test_sft_from_given_weights_starts_there_not_at_the_base(beta_sweep, tmp_path):
    # the looping organism of benchmarks/ fine-tunes an SFT model further: train_sft(init=...)
    from safetensors.torch import load_file

    from degenbench.documents import load_split
    from degenbench.stages.sft import train_sft

    sft = artifact(beta_sweep[0], "sft") / MODEL_DIR
    cfg = compose(TINY + [f"paths.results_dir={tmp_path}", "sft.max_steps=1", "sft.learning_rate=0"])
    train, _ = load_split(cfg.data, cfg.seed)
    for name, init in [("again", sft), ("base", None)]:
        train_sft(cfg, train[:2], tmp_path / name, init=init)
    sft_w, again, base = (load_file(p / "model.safetensors")
                          for p in [sft, tmp_path / "again" / MODEL_DIR, tmp_path / "base" / MODEL_DIR])
    assert sft_w.keys() == again.keys() == base.keys()
    assert all(torch.equal(sft_w[k], again[k]) for k in sft_w)  # lr 0: exactly the weights it started from
    assert not all(torch.equal(sft_w[k], base[k]) for k in sft_w)  # which are not the base's
