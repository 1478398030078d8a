"""Reference rows: the blind baselines and Tesseract, scored on the same pages with the same
metrics as the models (`stage=reference`), keyed apart from any family or beta, in the report."""
import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import CHAIN, TINY, Messages
from degenbench.models import reference_systems
from degenbench.analysis import runs as runs_mod
from degenbench.config import compose
from degenbench.documents import synthetic, truth_json
from degenbench.documents.record import make_document
from degenbench.documents.evalsets import eval_sets
from degenbench.metrics import score_output, settings
from degenbench.analysis.report import report
from degenbench.stages import reference
from degenbench.stages.graph import Keys, run_job

HAS_TESSERACT = shutil.which("tesseract") is not None
needs_tesseract = pytest.mark.skipif(not HAS_TESSERACT, reason="tesseract is not installed "
                                     "(apt-get install tesseract-ocr tesseract-ocr-por)")
REF = TINY + ["stage=reference", "eval=[heldout,validation]"]
PAGE = dict(cols=16, margin_cols=5, body_lines=2, cell=28)  # the toy experiment's pages


def doc(i, header, margin, footer, text):
    return make_document(f"d{i}", {"header": header, "margin": margin, "footer": footer, "text": text}, None, "test")


def test_blind_answer_is_the_most_common_training_answer():
    train = [doc(0, "A", "m1", "f1", "x"), doc(1, "B", "m2", "f2", "y"), doc(2, "B", "m2", "f2", "y"),
             doc(3, "C", "m1", "f1", "z")]
    out = reference_systems.blind_answer(train, train[:3])
    assert out == [train[1].answer] * 3
    # a tie goes to the answer seen first in the training documents (the seeded split's order)
    tie = [train[0], train[3], train[1]]
    assert reference_systems.blind_answer(tie, tie[:1]) == [train[0].answer]
    assert reference_systems.blind_answer(tie[::-1], tie[:1]) == [train[1].answer]


def test_blind_fields_assembles_each_fields_most_common_value():
    train = [doc(0, "A", "m1", "f1", "x"), doc(1, "A", "m2", "f2", "y"), doc(2, "B", "m2", "f3", "y"),
             doc(3, "C", "m3", "f3", "z"), doc(4, "D", "m1", "f4", "y")]
    (out,) = reference_systems.blind_fields(train, train[:1])
    # header A (2), margin m1/m2 tie -> m1 (seen first), footer f3 (2), text y (3): an answer no
    # training page has
    assert out == truth_json({"header": "A", "margin": "m1", "footer": "f3", "text": "y"})
    assert out not in {d.answer for d in train}
    assert json.loads(out) == {"header": "A", "margin": "m1", "footer": "f3", "text": "y"}


@needs_tesseract
def test_tesseract_reads_a_synthetic_page_far_better_than_the_blind_baselines():
    cfg = compose(["stage=reference"])
    pages = synthetic.generate(6, 0, **PAGE)
    train = synthetic.generate(24, 0, first=100, **PAGE)
    ocr = reference_systems.build(cfg, "tesseract")(train, pages)
    blind = reference_systems.blind_fields(train, pages)
    def mean_cer(outputs):  # scored as a run scores them
        m = settings(cfg.metrics)
        return sum(score_output(d, o, False, [], m)["cer"] for d, o in zip(pages, outputs)) / len(pages)

    tess_cer, blind_cer = mean_cer(ocr), mean_cer(blind)
    assert tess_cer < 0.35 and tess_cer < blind_cer / 2, (tess_cer, blind_cer, ocr)
    assert all(o == o.rstrip() and o for o in ocr)  # plain text, no trailing newline or form feed
    spec = reference_systems.spec(cfg, "tesseract")
    assert spec["version"].startswith("5") and spec["psm"] == 6 and spec["scale"] == 2 and spec["traineddata"]
    # pages read side by side come back in the documents' order, as one at a time reads them;
    # the worker count is not part of what defines the outputs (the run key)
    one = compose(["stage=reference", "reference.tesseract.workers=1"])
    assert reference_systems.build(one, "tesseract")(train, pages) == ocr
    assert reference_systems.spec(one, "tesseract") == spec


def test_a_reference_job_writes_complete_runs_and_a_second_one_for_another_family_is_a_cache_hit(tmp_path):
    root = [f"paths.results_dir={tmp_path}"]
    with Messages() as messages:
        first = run_job(compose(REF + root))
    runs_dir = tmp_path / "runs"
    dirs = sorted(d.name for d in runs_dir.iterdir() if d.is_dir())  # (and a hidden lock file each)
    systems = ["blind-answer", "blind-fields", "tesseract"]
    assert [d.rsplit("-", 2)[0] for d in dirs] == [f"{s}-reference" for s in systems for _ in (0, 1)]
    assert first.parent == runs_dir
    for d in filter(Path.is_dir, runs_dir.iterdir()):
        m = json.loads((d / "metrics.json").read_text())
        if not HAS_TESSERACT and m["family"] == "tesseract":
            continue
        assert (d / "_COMPLETE.json").is_file() and m["stage"] == "reference" and m["size"] == "-"
        pred = pd.read_parquet(d / "predictions.parquet")
        assert m["n_docs"] == len(pred) == len(json.loads((d / "heldout_ids.json").read_text())) \
            == {"heldout": 4, "validation": 2}[m["eval_set"]]
        assert not pred.hit_limit.any() and (pred.new_tokens == 0).all() and (pred.seconds >= 0).all()
        assert {"doc_id", "truth", "prediction", "degenerate", "cer", "ned", "score", "json_valid"} <= set(pred)
        assert pred.cer.mean() == pytest.approx(m["cer"])
    assert sum(m.startswith("run ") for m in messages) == (6 if HAS_TESSERACT else 4)

    other = REF + root + ["family=gemma-3-4b", "dpo.beta=0.5", "generation.batch_size=2", "sft.trainer.max_steps=3"]
    with Messages() as messages:
        again = run_job(compose(other))
    assert sorted(d.name for d in runs_dir.iterdir() if d.is_dir()) == dirs  # no new run folder
    assert not any(m.startswith("run ") for m in messages if "tesseract" not in m or HAS_TESSERACT)
    if HAS_TESSERACT:
        assert again == first and sum(m.startswith("DONE") for m in messages) == 6


def keys(*overrides):
    cfg = compose(REF + list(overrides))
    plan = reference.plan(cfg, Keys(cfg).data, eval_sets(cfg, None))
    return {(p.system, p.name): p.key for p in plan}


@pytest.mark.parametrize("override, changed", [
    ("family=gemma-3-4b", set()), ("dpo.beta=0.5", set()), ("generation.max_new_tokens=7", set()),
    ("sft.trainer.learning_rate=0.5", set()), ("device=cuda", set()), ("logger=offline", set()),
    ("seed=1", {"blind-answer", "blind-fields", "tesseract"}),
    ("data.n_docs=13", {"blind-answer", "blind-fields", "tesseract"}),
    ("metrics.tail_chars=10", {"blind-answer", "blind-fields", "tesseract"}),
    ("reference.tesseract.psm=4", {"tesseract"}),
])
def test_reference_keys_hold_the_data_seed_set_metrics_and_system_only(override, changed):
    base, new = keys(), keys(override)
    assert set(base) == set(new) == {(s, e) for s in ("blind-answer", "blind-fields", "tesseract")
                                     for e in ("heldout", "validation")}
    assert {s for (s, e) in base if base[s, e] != new[s, e]} == changed


def test_missing_tesseract_is_a_recorded_skip_and_the_report_shows_the_reference_rows(tmp_path, caplog):
    root = [f"paths.results_dir={tmp_path}", "eval=[heldout]"]
    no_tess = ["reference.tesseract.binary=/nonexistent/tesseract"]
    with caplog.at_level(logging.WARNING, logger="degenbench"):
        run_job(compose(REF + root + no_tess))  # no crash
    assert "apt-get install tesseract-ocr tesseract-ocr-por" in caplog.text
    (skip,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir() and d.name.startswith("tesseract")]
    rec = json.loads((skip / "metrics.json").read_text())
    assert rec["skipped_system"] == "tesseract" and "apt-get install" in rec["why"]
    assert not (skip / "_COMPLETE.json").exists()  # a later job with Tesseract installed runs it
    run_job(compose(TINY + root + ["stage=vanilla"]))  # a model beside them

    runs = runs_mod.load_runs(tmp_path / "runs")
    assert sorted(runs.family) == ["blind-answer", "blind-fields", "qwen2.5-vl-3b"]
    skipped = runs_mod.skipped_systems(tmp_path / "runs", runs)
    assert skipped[["system", "eval_set", "seed"]].values.tolist() == [["tesseract", "heldout", 0]]
    named = report(runs, tmp_path / "report", "test", skipped, with_figures=False)
    st = named["stages"]
    assert st.family.tolist()[:4] == ["blind-answer", "blind-answer", "blind-fields", "blind-fields"]
    assert st.stage.tolist() == ["reference"] * 4 + ["vanilla"] * 2
    q = named["quality"]
    assert q[["system", "stage"]].values.tolist() == [["blind-answer", "reference"], ["blind-fields", "reference"],
                                                      ["qwen2.5-vl-3b", "vanilla"]]
    assert (q.cer > 0).all() and q.degeneration_rate.notna().all()
    assert named["cost"].stage.tolist() == ["vanilla"] and named["comparisons"].empty
    assert named["beta_sweep"].empty and named["beta_choice"].empty
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "`tesseract` on `heldout`, seed 0" in readme and "### quality" in readme
    assert "blind-answer" in (tmp_path / "report" / "stages.md").read_text()


def test_the_tables_comparing_a_models_stages_leave_the_reference_rows_out(chain, tmp_path):
    """The shared chain (vanilla, SFT, DPO at two betas, heldout and validation) plus the reference
    runs of its data: every table is made, references only in `stages` and `quality`."""
    root = shutil.copytree(chain.root, tmp_path / "chain", ignore=shutil.ignore_patterns("wandb", "*.lock"))
    run_job(compose(CHAIN + [f"paths.results_dir={root}", "stage=reference", "logger=disabled"]))
    runs = runs_mod.load_runs(root / "runs")
    refs = set(runs.family[runs.stage == "reference"])
    assert refs == {"blind-answer", "blind-fields", *(["tesseract"] if HAS_TESSERACT else [])}
    assert set(runs.eval_set[runs.stage == "reference"]) == {"heldout", "validation"}
    named = report(runs, tmp_path / "report", "test", runs_mod.skipped_systems(root / "runs", runs), with_figures=False)
    for name in ("beta_choice", "beta_sweep", "comparisons", "reduction", "pairs", "cost"):
        assert not set(named[name].get("family", [])) & refs, name
    assert len(named["comparisons"]) and len(named["beta_choice"])  # the models' tables are all there
    st = named["stages"]
    n = len(refs) * 2  # per seed and pooled, on heldout (validation is never a reported set)
    assert st.stage.tolist()[:n] == ["reference"] * n and "reference" not in st.stage.tolist()[n:]
    assert set(st.eval_set) == {"heldout"}
    q = named["quality"]
    assert q.stage.tolist()[:len(refs)] == ["reference"] * len(refs)
    assert set(q.stage) == {"reference", "vanilla", "sft", "dpo"}
