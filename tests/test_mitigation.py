"""Decode-time mitigations (conf/mitigation, degenbench/decoding/mitigation.py): each one's settings reach HF
generate and vLLM's SamplingParams, retries are counted and every attempt is recorded, and the
pages whose truth legitimately repeats are made, flagged and reported apart."""
import json

import pandas as pd
import pytest
from conftest import TINY
from omegaconf import OmegaConf

from degenbench.decoding import mitigation
from degenbench.analysis import mitigation_tables as mit_tables
from degenbench.decoding import vllm as vllm_backend
from degenbench.models.chat import Output
from degenbench.config import compose
from degenbench.documents import synthetic
from degenbench.documents.evalsets import EvalSet
from degenbench.documents.record import truth_repeats
from degenbench.models.families import load_trained
from degenbench.decoding.generate import decoding, generate
from degenbench.stages import reuse
from degenbench.stages.graph import Keys, run_job

MITIGATIONS = ["none", "repetition_penalty", "no_repeat_ngram", "temperature_retry", "loop_stop_retry"]


def _attempts(name: str, *over: str):
    cfg = compose([f"mitigation={name}", *over])
    return cfg, mitigation.attempts(cfg.generation, cfg.mitigation)


def test_each_mitigation_is_its_attempts_settings():
    assert [len(_attempts(m)[1]) for m in MITIGATIONS] == [1, 1, 1, 8, 2]
    (rp,) = _attempts("repetition_penalty", "mitigation.generation.repetition_penalty=1.2")[1]
    assert rp.repetition_penalty == 1.2 and not rp.do_sample
    (ng,) = _attempts("no_repeat_ngram")[1]
    assert ng.no_repeat_ngram_size == 12 and ng.repetition_penalty == 1.0
    cfg, tr = _attempts("temperature_retry")
    assert not tr[0].do_sample  # attempt 1 is the evaluation's own (greedy) decoding
    assert [g.temperature for g in tr[1:]] == [0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0]  # olmOCR's, after its first
    assert all(g.do_sample and g.top_p == 1.0 and g.top_k == 0 for g in tr[1:])
    _, ls = _attempts("loop_stop_retry")
    assert ls[0].loop_stop and ls[0].repetition_penalty == 1.0 and ls[1].loop_stop and ls[1].repetition_penalty == 1.05
    assert mitigation.label(cfg) == "temperature_retry x8"
    with pytest.raises(ValueError, match="generation.* does not have"):
        _attempts("repetition_penalty", "+mitigation.generation.repetition_penalt=1.1")


def test_settings_reach_hf_generate_and_change_what_it_writes():
    """On the tiny Qwen2.5-VL stand-in: the GenerationConfig carries each setting, and generate
    obeys it (no repeated 3-gram under n-gram blocking; a penalty changes the output)."""
    cfg = compose(TINY + ["data.max_new_tokens=48"])
    model, processor = load_trained(cfg.family, "cpu")
    pages = [d.load_image() for d in synthetic.generate(2, 0, cols=16, margin_cols=5, body_lines=2,
                                                        repetitive_pages=1.0)]
    outs = {}
    for name, over in (("none", []), ("no_repeat_ngram", ["mitigation.generation.no_repeat_ngram_size=3"]),
                       ("repetition_penalty", ["mitigation.generation.repetition_penalty=3.0"])):
        c, (g,) = _attempts(name, *TINY, "data.max_new_tokens=48", *over)
        applied = decoding(model, g).to_diff_dict()
        assert applied.get("no_repeat_ngram_size", 0) == g.no_repeat_ngram_size
        assert applied.get("repetition_penalty", 1.0) == g.repetition_penalty
        outs[name] = generate(model, processor, c.family, pages, g)
    for out in outs["no_repeat_ngram"]:
        grams = [tuple(out.token_ids[i:i + 3]) for i in range(len(out.token_ids) - 2)]
        assert len(grams) == len(set(grams))
    assert any(len({tuple(o.token_ids[i:i + 3]) for i in range(len(o.token_ids) - 2)}) < len(o.token_ids) - 2
               for o in outs["none"])  # without blocking the stand-in repeats 3-grams on these pages
    assert [o.text for o in outs["repetition_penalty"]] != [o.text for o in outs["none"]]


def test_settings_reach_vllm_sampling_params():
    """The SamplingParams arguments of every attempt (vLLM itself: benchmarks/vllm_check.py)."""
    for name in MITIGATIONS:
        cfg, gens = _attempts(name, "data.max_new_tokens=256")
        for k, g in enumerate(gens):
            kw = vllm_backend.sampling_kwargs(g, seed=k)
            assert kw["repetition_penalty"] == g.repetition_penalty
            assert kw["temperature"] == (g.temperature if g.do_sample else 0.0)
            assert ("repetition_detection" in kw) == bool(g.loop_stop)
            assert kw.get("extra_args") == ({"ngram_size": g.no_repeat_ngram_size, "window_size": 256}
                                            if g.no_repeat_ngram_size else None)
        engine = vllm_backend.engine_kwargs(cfg.family, gens)
        assert engine.get("logits_processors") == ([vllm_backend.NGRAM_PROCESSOR] if name == "no_repeat_ngram" else None)
    _, tr = _attempts("temperature_retry")
    assert vllm_backend.sampling_kwargs(tr[3])["top_p"] == 1.0 and vllm_backend.sampling_kwargs(tr[3])["top_k"] == 0


@pytest.mark.slow  # minutes on 2 cores: .ci/run runs it with the slow tests
def test_retries_are_counted_and_every_attempt_recorded(tmp_path):
    """A budget of 24 tokens: every page hits it, so temperature_retry tries each 8 times; the last
    attempt is scored, every attempt's tokens and seconds are counted."""
    cfg = compose(TINY + ["stage=vanilla", "mitigation=temperature_retry", f"paths.results_dir={tmp_path}"])
    run = run_job(cfg)
    p = pd.read_parquet(run / "predictions.parquet")
    m = json.loads((run / "metrics.json").read_text())
    assert run.name.startswith("qwen2.5-vl-3b-tiny-vanilla-temperature_retry_x8-heldout-")
    assert (p.attempts == 8).all() and (p.mitigation == "temperature_retry x8").all()
    assert (p.new_tokens_all == 8 * 24).all() and m["new_tokens_all"] == 8 * 24 * len(p) and m["n_retried"] == len(p)
    for row in p.itertuples():
        tries = list(row.attempt_outputs)
        assert [a["temperature"] for a in tries] == [None, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0]
        assert row.seconds_all == pytest.approx(sum(a["seconds"] for a in tries))
        assert tries[-1]["text"] == row.prediction  # the last attempt is the one scored
    assert [a["applied"].get("temperature") for a in m["decoding"]["attempts"]] == [None, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0]


def test_which_outputs_are_retried():
    out = lambda hit, cut: Output("x", [1], 1, hit, 0.1, loop_stopped=cut)  # noqa: E731
    assert mitigation.needs_retry(out(True, False)) and mitigation.needs_retry(out(False, True))
    assert not mitigation.needs_retry(out(False, False))
    assert not mitigation.needs_retry(out(True, False), ("loop_stopped",))  # loop_stop_retry: only a cut page


def test_mitigation_keys_and_the_budget_reuse():
    ev = EvalSet("heldout", {"split": "heldout"}, list, external=False)
    none = Keys(compose(TINY)).eval(compose(TINY), ev)
    keys = {m: Keys(c := compose(TINY + [f"mitigation={m}"])).eval(c, ev) for m in MITIGATIONS}
    assert keys["none"] == none  # runs without a mitigation keep their keys
    assert len(set(keys.values())) == len(MITIGATIONS)
    rp = compose(TINY + ["mitigation=repetition_penalty", "mitigation.generation.repetition_penalty=1.2"])
    assert Keys(rp).eval(rp, ev) != keys["repetition_penalty"]
    # a 4x run cannot take 1x outputs where a page may be retried
    assert mitigation.retries(compose(TINY + ["mitigation=temperature_retry"]))
    assert not mitigation.retries(compose(TINY + ["mitigation=repetition_penalty"]))
    assert reuse.extendable(compose(TINY + ["mitigation=temperature_retry"]), None) is None


def test_repetitive_pages_are_mixed_in_at_their_share_and_flagged():
    plain = synthetic.generate(200, 3, cols=16, margin_cols=5, body_lines=2)
    mixed = synthetic.generate(200, 3, cols=16, margin_cols=5, body_lines=2, repetitive_pages=0.25)
    flagged = [d for d in mixed if d.repetitive]
    assert 30 <= len(flagged) <= 70 and not any(d.repetitive for d in plain)
    for d in flagged:
        rows = d.truth["text"].split("\n")
        assert len(rows) == 2 and rows[0] == rows[1] and truth_repeats(d.truth["text"])
    # the other pages are the very pages of the stream without the share
    same = {d.id: d.truth for d in plain}
    assert all(same[d.id] == d.truth for d in mixed if not d.repetitive)
    assert not truth_repeats("Ofício 12 solicita\no processo nº 45") and truth_repeats("5,00 5,00 5,00")
    with pytest.raises(ValueError, match="repetitive_pages"):
        synthetic.generate(2, 0, repetitive_pages=1.5)


def _runs_and_preds():
    """Two seeds' SFT (none, repetition penalty) and DPO runs on four pages, two of them repetitive."""
    runs, preds = [], []
    spec = {  # run -> (stage, mitigation, degenerate flags, cers, hit_limit, first attempt cut)
        "sft": ("sft", "none", [1, 0, 0, 0], [2.0, 0.1, 0.0, 0.0], [1, 0, 0, 0], [0, 0, 0, 0]),
        "rp": ("sft", "repetition_penalty=1.1", [0, 0, 1, 0], [0.2, 0.1, 2.0, 0.3], [0, 0, 1, 0], [0, 0, 0, 0]),
        "dpo": ("dpo", "none", [0, 0, 0, 0], [0.1, 0.1, 0.0, 0.0], [0, 0, 0, 0], [0, 0, 0, 0]),
        "ls": ("sft", "loop_stop_retry", [1, 0, 0, 0], [2.0, 0.1, 0.0, 0.0], [0, 0, 0, 0], [1, 0, 1, 0]),
    }
    for seed in (0, 1):
        for name, (stage, mit, deg, cer, hit, cut) in spec.items():
            rid = f"{name}-{seed}"
            runs.append({"family": "f", "size": "tiny", "eval_set": "heldout", "stage": stage, "mitigation": mit,
                         "beta": 0.1 if stage == "dpo" else None, "seed": seed, "run_id": rid, "run_dir": None})
            for i in range(4):
                preds.append({"run_id": rid, "doc_id": f"d{i}", "degenerate": bool(deg[i]), "cer": cer[i],
                              "repetitive": i >= 2, "new_tokens_all": 10, "seconds_all": 0.1, "attempts": 1 + cut[i],
                              "hit_limit": bool(hit[i]), "loop_stopped": False, "prediction": "x",
                              "attempt_outputs": [{"loop_stopped": bool(cut[i])}]})
    return pd.DataFrame(runs), pd.DataFrame(preds)


def test_mitigation_table_counts_fixes_breaks_and_leaves():
    runs, preds = _runs_and_preds()
    tab = mit_tables.table(runs, preds)
    rp = tab[(tab.arm == "sft + repetition_penalty=1.1") & (tab.seed == 0)].iloc[0]
    # page 0 fixed; page 2 (repetitive) newly loops; page 3 (repetitive) reads worse: 2 broken
    assert (rp.fixes, rp.leaves, rp.breaks, rp.improves) == (1, 0, 2, 0)
    assert rp.cer_repetitive_diff == pytest.approx((2.0 + 0.3) / 2) and rp.cer_ordinary_diff == pytest.approx(-0.9)
    pooled = tab[(tab.arm == "dpo") & (tab.seed == "pooled") & (tab.family == "f")].iloc[0]
    assert (pooled.fixes, pooled.n_docs, pooled.n_runs) == (2, 8, 2)
    assert pooled.cer_ordinary_diff_lo <= pooled.cer_ordinary_diff <= pooled.cer_ordinary_diff_hi


def test_audit_counts_loopstop_cuts_of_pages_that_end():
    runs, preds = _runs_and_preds()
    audit = mit_tables.audit(runs, preds, {"tail_chars": 15, "min_repeats": 4})
    ls = audit[(audit.stage == "sft") & (audit.mitigation == "loop_stop_retry")].iloc[0]
    # cut on page 0 (ordinary, which loops without LoopStop) and page 2 (repetitive, which ends): one false positive
    assert (ls.loopstop_cut, ls.loopstop_fp, ls.loopstop_cut_ordinary, ls.loopstop_fp_ordinary) == (2, 2, 2, 0)
    assert ls.n_repetitive == 4 and pd.isna(ls.rule_fp)  # no 4x runs: the rule's false positives are not known
    rp = audit[audit.mitigation == "repetition_penalty=1.1"].iloc[0]
    assert rp.rule_flagged == 2 and rp.tail_only_fp == 0


def test_a_manifest_flag_must_be_a_boolean(tmp_path):
    from PIL import Image

    from degenbench.documents.sources import load_documents

    Image.new("RGB", (8, 8), "white").save(tmp_path / "a.png")
    row = {"image": "a.png", "truth": {"text": "Taxa 1,00\nTaxa 1,00"}}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row | {"image": "a.png", "id": "b",
                                                                                  "repetitive": False}) + "\n")
    data = OmegaConf.merge(compose(["data=manifest", "data.path=x"]).data, {"path": str(tmp_path / "m.jsonl")})
    a, b = load_documents(data)
    assert a.repetitive and not b.repetitive  # detected from the truth; or as the manifest says
    (tmp_path / "m.jsonl").write_text(json.dumps(row | {"repetitive": "yes"}) + "\n")
    with pytest.raises(ValueError, match="row 1.*'repetitive' must be true or false"):
        load_documents(data)
