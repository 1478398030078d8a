"""The preference stage's options (issue 31): each objective's settings reach its TRL config class,
KTO's labels come from the judge, the unlikelihood loss lowers a repeated token's probability,
best-of-N keeps the sample with the highest implicit reward, rejections can be merely mediocre at
a matched number of pairs, and DPO can start from the untrained base."""
import json
import shutil

import pandas as pd
import pytest
import torch
from conftest import CHAIN, TINY, grid
from trl import DPOConfig, KTOConfig

from degenbench import sweep
from degenbench.config import compose
from degenbench.documents import load_split, synthetic
from degenbench.decoding.rerank import completion_logps, implicit_rewards, pick, token_logps
from degenbench.models.families import load, load_processor
from degenbench.stages.data import preference_texts, with_images, page_ref
from degenbench.stages.dpo import METHODS
from degenbench.stages.graph import Keys, run_job
from degenbench.stages.pairs import _rejected, build_pairs, kto_labels
from degenbench.stages.training import trainer_config
from degenbench.stages.unlikelihood import UnlikelihoodConfig, UnlikelihoodTrainer, repeated_mask


@pytest.mark.parametrize("option, cls, expect", [
    ("rpo", DPOConfig, {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]}),
    ("default", DPOConfig, {"loss_type": ["sigmoid"]}),
    ("ipo", DPOConfig, {"loss_type": ["ipo"]}),
    ("robust", DPOConfig, {"loss_type": ["robust"], "label_smoothing": 0.1}),
    ("apo_zero", DPOConfig, {"loss_type": ["apo_zero"]}),
    ("kto", KTOConfig, {"loss_type": "kto", "desirable_weight": 1.33}),
    ("unlikelihood", UnlikelihoodConfig, {"unlikelihood_ngram": 6, "unlikelihood_alpha": 1.0}),
])
def test_each_objective_reaches_its_trl_config(option, cls, expect, tmp_path):
    """`dpo=<option>` (and any field set on top) arrives in the config class TRL's trainer reads,
    with the experiment's steps and learning rate; the key tells the objectives apart."""
    extra = {"kto": ["dpo.trainer.desirable_weight=1.33"], "unlikelihood": ["dpo.trainer.unlikelihood_ngram=6"]}
    cfg = compose(["experiment=losses", "stage=dpo", f"dpo={option}", *extra.get(option, [])])
    config_class, _ = METHODS[cfg.dpo.method]
    args = trainer_config(config_class, cfg, cfg.dpo.trainer, tmp_path, [])
    assert type(args) is cls
    for k, v in expect.items():
        assert getattr(args, k) == v, k
    assert (args.max_steps, args.learning_rate, args.beta) == (8, 5e-5, 0.1)
    with pytest.raises(ValueError, match="dpo.trainer.*no_such_field"):
        bad = compose(["experiment=losses", "stage=dpo", f"dpo={option}", "+dpo.trainer.no_such_field=1"])
        trainer_config(config_class, bad, bad.dpo.trainer, tmp_path, [])


def test_objectives_are_keyed_apart_and_the_toys_dpo_key_is_unchanged():
    keys = {o: Keys(compose(["experiment=losses", "stage=dpo", f"dpo={o}"])).dpo
            for o in ("rpo", "default", "ipo", "robust", "apo_zero", "kto", "unlikelihood")}
    assert len(set(keys.values())) == len(keys)
    assert keys["rpo"] == Keys(compose(["experiment=mitigations", "stage=dpo"])).dpo  # the toy's own objective


def judged_table() -> pd.DataFrame:
    """Candidates of three pages as the judge leaves them."""
    rows = [("a", "good", True, False, 0.95), ("a", "ok-ish", False, False, 0.6), ("a", "loop", False, True, 0.1),
            ("b", "loop1", False, True, 0.2), ("b", "loop2", False, True, 0.05),  # loops and no good sample
            ("c", "good", True, False, 0.9), ("c", "meh", False, False, 0.5)]   # no loop
    return pd.DataFrame([{"doc_id": d, "text": t, "good": g, "degenerate": x, "quality": q,
                          "hit_limit": x, "loop_stopped": False} for d, t, g, x, q in rows])


def test_kto_labels_come_from_the_judge():
    """Loops undesirable, the page's best good sample desirable; a page that loops with no good
    sample still gives its loops; a page without loops gives nothing; loops stay open (unfinished)."""
    labels = kto_labels(judged_table(), "degenerate", k=2)
    assert sorted(zip(labels.doc_id, labels.text, labels.label)) == [
        ("a", "good", True), ("a", "loop", False), ("b", "loop1", False), ("b", "loop2", False)]
    assert not labels[~labels.label].finished.any() and labels[labels.label].finished.all()
    assert kto_labels(judged_table(), "degenerate", k=1).query("doc_id == 'b'").text.tolist() == ["loop2"]


def test_rejections_can_be_merely_mediocre():
    j = judged_table().set_index(pd.RangeIndex(7))
    a, c = j[j.doc_id == "a"], j[j.doc_id == "c"]
    assert _rejected(a, 0.95, "mediocre", 2).text.tolist() == ["ok-ish"]   # never the loop
    assert _rejected(a, 0.95, "worst", 2).text.tolist() == ["loop", "ok-ish"]
    assert _rejected(a, 0.95, "mixed", 1).text.tolist() == ["loop"]
    assert _rejected(c, 0.9, "degenerate", 2).empty and _rejected(c, 0.9, "mediocre", 2).text.tolist() == ["meh"]


def test_pairs_match_the_count_of_another_strategy(tmp_path):
    """pairs.match=degenerate: the mediocre strategy keeps as many pairs as the loops give on the
    same candidates (a seeded subset), and says so in its stats."""
    cfg = compose(TINY + ["pairs.rejected=mediocre", "pairs.match=degenerate", "pairs.max_pairs_per_doc=2"])
    docs = {d.id: d for d in load_split(cfg.data, cfg.seed).train}
    ids = list(docs)[:4]
    rows = []
    for i, d in enumerate(ids):  # page i: one good, 3 mediocre, and i % 2 loops
        rows += [{"doc_id": d, "text": docs[d].answer, "good": True, "degenerate": False, "quality": 1.0}]
        rows += [{"doc_id": d, "text": f"meh {k}", "good": False, "degenerate": False, "quality": 0.3 + k / 10} for k in range(3)]
        rows += [{"doc_id": d, "text": "ab" * 40, "good": False, "degenerate": True, "quality": 0.0}] * (i % 2)
    judged = pd.DataFrame(rows).assign(hit_limit=lambda t: t.degenerate, loop_stopped=False)
    stats = build_pairs(cfg, docs, judged, tmp_path, load_processor(cfg.family))
    assert stats["pairs_to_match"] == 2 and stats["pairs_before_match"] == 8 and stats["pairs"] == 2
    unmatched = build_pairs(compose(TINY + ["pairs.rejected=mediocre"]), docs, judged, tmp_path / "all",
                            load_processor(cfg.family))
    assert unmatched["pairs"] == 8 and "pairs_to_match" not in unmatched


def own_copy(chain, tmp_path):
    """A results dir holding a copy of the chain's artifacts: the chain is shared by the session
    and only read, so jobs that add runs or artifacts write here instead."""
    if not (tmp_path / "artifacts").exists():
        shutil.copytree(chain.root / "artifacts", tmp_path / "artifacts")
    return tmp_path


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_kto_and_unlikelihood_train_on_the_chain_and_record_what_they_used(chain, tmp_path):
    """Both run as the DPO stage of the tiny chain (its SFT model, its judged samples): KTO's
    labels are the judge's, the unlikelihood trainer logs its two terms."""
    from degenbench.stages.pairs import JUDGED

    results = own_copy(chain, tmp_path)
    for option in ("kto", "unlikelihood"):
        cfg = compose(CHAIN + [f"paths.results_dir={results}", "stage=dpo", f"dpo={option}", "eval=[heldout]"])
        run = run_job(cfg)
        assert f"-{option}-" in run.name
        training = json.loads((run / "training.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        assert training["method"] == option and metrics["training"].startswith(option)
        judged = pd.read_parquet(Keys_dir(cfg, "pairs") / JUDGED)
        if option == "kto":
            want = kto_labels(judged, cfg.pairs.rejected, cfg.pairs.max_pairs_per_doc)
            assert training["kto_labels"] == {"desirable": int(want.label.sum()), "undesirable": int((~want.label).sum())}
        else:
            assert {"nll", "unlikelihood"} <= set(training["log_history"][0])


def Keys_dir(cfg, kind):
    from degenbench.stages.store import artifact_dir

    return artifact_dir(cfg.paths.artifacts_dir, kind, cfg.family.name, getattr(Keys(cfg), kind))


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_unlikelihood_lowers_the_probability_of_a_repeated_token(tmp_path):
    """On the tiny Qwen2.5-VL stand-in, first taught a loop of "ab" (NLL on it): three steps on the
    pair (truth, that loop) with the unlikelihood term lower the mean probability of the loop's
    repeated tokens below where it started, and far below the same three steps without the term."""
    cfg = compose(TINY)
    model, processor = load(cfg.family, "cpu")
    doc = synthetic.generate(1, 0)[0]
    image = doc.load_image()
    loop = '{"header": "' + "ab" * 30
    ids = processor.tokenizer(loop, add_special_tokens=False)["input_ids"]
    rep = repeated_mask(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.bool), 4)[0]
    assert rep.sum() >= 40  # the loop's tokens after its first n-gram

    def rows(chosen: str):
        texts = preference_texts(processor, cfg.family, chosen, loop, rejected_finished=False)
        return with_images({"images": [[page_ref(doc)]], **{k: [v] for k, v in texts.items()}})

    def train(m, data, alpha: float):
        args = UnlikelihoodConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=1,
                                  learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no", bf16=False,
                                  max_length=None, unlikelihood_alpha=alpha)
        UnlikelihoodTrainer(model=m, ref_model=None, args=args, train_dataset=data, processing_class=processor).train()
        return m.eval()

    def repeated_p(m) -> float:
        with torch.no_grad():
            logps, _ = token_logps(m, processor, cfg.family, image, [ids])
        return logps[0][rep].exp().mean().item()

    looping = train(model, rows('{"header": "' + "ab" * 30 + '"}'), alpha=0.0)  # NLL on the loop: it learns it
    looping.save_pretrained(tmp_path / "looping")
    start = repeated_p(load(cfg.family, "cpu", weights=str(tmp_path / "looping"))[0])
    with_ul = repeated_p(train(load(cfg.family, "cpu", weights=str(tmp_path / "looping"))[0], rows(doc.answer), 1.0))
    without = repeated_p(train(load(cfg.family, "cpu", weights=str(tmp_path / "looping"))[0], rows(doc.answer), 0.0))
    assert start > 0.05, start
    assert with_ul < start and with_ul < 0.5 * without, (start, with_ul, without)


@pytest.mark.parametrize("family", ["qwen2.5-vl-3b", "gemma-3-4b"])
def test_best_of_n_keeps_the_sample_with_the_highest_implicit_reward(family):
    """Policy = the stand-in, reference = the stand-in with its output layer perturbed (a fixed
    seed): the batched, padded rewards equal each sample scored alone, and the pick is their argmax."""
    cfg = compose([f"family={family}", "logger=disabled", "device=cpu"])
    policy, processor = load(cfg.family, "cpu")
    reference, _ = load(cfg.family, "cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in reference.get_output_embeddings().parameters():
            p.add_(0.5 * torch.randn_like(p))
    image = synthetic.generate(1, 0)[0].load_image()
    tok = processor.tokenizer
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in ('{"header": "A"}', "ababababab", '{"text": "Rua"}')]
    rewards = implicit_rewards(policy, reference, processor, cfg.family, image, rows, beta=0.1)
    alone = [0.1 * (completion_logps(policy, processor, cfg.family, image, [r])[0]
                    - completion_logps(reference, processor, cfg.family, image, [r])[0]) for r in rows]
    assert rewards == pytest.approx(alone, abs=1e-3)
    assert len(set(round(r, 3) for r in rewards)) == 3  # a real choice
    assert pick(rewards) == max(range(3), key=lambda j: alone[j])
    assert pick([0.2, 0.5, 0.5]) == 1  # ties: the first


def test_best_of_n_runs_on_the_chains_dpo_model_and_keeps_the_best(chain, tmp_path):
    cfg = compose(CHAIN + [f"paths.results_dir={own_copy(chain, tmp_path)}", "stage=dpo", "dpo.beta=0.1",
                           "mitigation=best_of_n",
                           "eval=[heldout]"])
    run = run_job(cfg)
    preds = pd.read_parquet(run / "predictions.parquet")
    assert (preds.attempts == 4).all()
    for row in preds.itertuples():
        tries = list(row.attempt_outputs)
        assert tries[-1]["reward"] == max(t["reward"] for t in tries)
        assert row.prediction == tries[-1]["text"]
        assert row.new_tokens_all == sum(t["new_tokens"] for t in tries)
    with pytest.raises(ValueError, match="stage dpo only"):
        sweep.check(compose(CHAIN + ["stage=sft", "mitigation=best_of_n"]))


def test_the_best_of_n_sweep_skips_sft_grid_points():
    kept, dropped = sweep.distinct(grid("experiment=best_of_n", "seed=0", "family=qwen2.5-vl-3b",
                                        "mitigation=none,best_of_n"), compose)
    jobs = [dict(o.split("=", 1) for o in j) for j in kept]
    assert {(j["stage"], j["mitigation"]) for j in jobs} == {("sft", "none"), ("dpo", "none"), ("dpo", "best_of_n"),
                                                             ("reference", "none")}
    assert any("stage dpo only" in why[0] for _, why in dropped)


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_sft_method_none_is_the_base_and_dpo_starts_from_it(chain, tmp_path):
    """sft.method=none: its "SFT" evaluation is the vanilla model's, output for output; DPO then
    trains from the base on the base's own samples."""
    over = CHAIN + [f"paths.results_dir={own_copy(chain, tmp_path)}", "sft.method=none", "eval=[heldout]"]
    untrained = pd.read_parquet(run_job(compose(over + ["stage=sft"])) / "predictions.parquet")
    vanilla = pd.read_parquet(chain.runs["vanilla"] / "predictions.parquet")
    assert untrained.set_index("doc_id").prediction.equals(vanilla.set_index("doc_id").prediction.loc[untrained.doc_id])
    assert untrained.training.iloc[0] == "untrained"
    dpo = run_job(compose(over + ["stage=dpo"]))
    metrics = json.loads((dpo / "metrics.json").read_text())
    assert metrics["training"].endswith("from base") and "from_base" in dpo.name
    assert Keys(compose(over + ["stage=sft", "sft.trainer.max_steps=99"])).sft == Keys(compose(over + ["stage=sft"])).sft


def test_the_arms_table_tests_each_arm_against_sft_with_exact_mcnemar(tmp_path):
    """Per arm: loops it fixes and loops it brings, McNemar's exact p on those discordant pages, CER
    on ordinary and repetitive pages; the summary figure draws one row per arm of several tables."""
    from degenbench.analysis import alternatives
    from degenbench.analysis.mitigation_tables import _row

    n = 20
    a = pd.DataFrame({"degenerate": [True] * 6 + [False] * 14, "cer": [1.5] * 6 + [0.1] * 14,
                      "repetitive": [False, True] * 10, "new_tokens_all": 100, "seconds_all": 0.5, "attempts": 1},
                     index=[f"p{i}" for i in range(n)])
    b = a.copy()
    b.loc[["p0", "p1", "p2", "p3", "p4"], ["degenerate", "cer"]] = [False, 0.2]  # fixes 5, leaves 1
    b.loc["p10", "degenerate"] = True  # one new loop
    row = _row(a, b, None, seed=0)
    assert (row["fixes"], row["leaves"], row["new_loops"]) == (5, 1, 1)
    assert row["mcnemar_p"] == pytest.approx(0.21875)  # two-sided binomial, 1 of 6 discordant
    assert row["n_repetitive"] == 10 and row["cer_ordinary"] < a.cer[~a.repetitive].mean()
    table = pd.DataFrame([{"family": "all", "seed": "pooled", "eval_set": "heldout", "arm": arm, "n_runs": 3,
                           **_row(a, a if arm == "sft" else b, None, 0)} for arm in ("sft", "dpo", "dpo[kto]")])
    # a second experiment sharing the first's SFT and DPO runs, with its own kto arm on fewer seeds
    other = pd.concat([table, table.tail(1).assign(n_runs=2, n_degenerate=9)]).iloc[[0, 1, 3]]
    for name, t in (("losses", table), ("rejections", other)):
        (tmp_path / name).mkdir()
        t.to_csv(tmp_path / name / "arms.csv", index=False)
    alternatives.main(["--tables", str(tmp_path / "losses" / "arms.csv"), str(tmp_path / "rejections" / "arms.csv"),
                       "--out", str(tmp_path / "out")])
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary.arm.tolist() == ["sft", alternatives.PIPELINE, "dpo[kto]", "dpo[kto]"]
    assert summary.experiment.tolist() == ["losses"] * 3 + ["rejections"]  # the same runs once, the other kto kept
    assert (tmp_path / "out" / "summary.png").is_file()
