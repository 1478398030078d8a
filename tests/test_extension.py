"""Extension by instantiation: a user's own judge, document source and reference system, from their
own package and YAML (`_target_`, hydra.utils.instantiate), with no change to degenbench. The
package is a real module written into a folder put on sys.path (and PYTHONPATH for the command);
its configs sit in a folder of the user's own, on Hydra's search path."""
import json
import os
import subprocess
import sys
import textwrap

import datasets
import pandas as pd
import pytest

from conftest import TINY
from degenbench import sweep
from degenbench.config import compose
from degenbench.documents import load_documents, synthetic
from degenbench.documents.evalsets import data_identity
from degenbench.stages.graph import Keys, run_job

PACKAGE = '''
"""A user's own extensions: nothing here is degenbench's."""
from pathlib import Path

from degenbench.documents.record import make_document


class ShortestJudge:
    """Quality = weight / (1 + characters): the shorter a candidate, the better."""

    def __init__(self, weight: float, device: str = "auto"):
        self.weight, self.device = weight, device

    def quality(self, doc, text: str) -> float:
        return self.weight / (1 + len(text))


def folder_pages(folder: str, pattern: str = "*.png"):
    """A folder of page images, each with its transcription in a .txt file of the same name."""
    return [make_document(p.stem, None, p.with_suffix(".txt").read_text(), str(p), image_path=str(p))
            for p in sorted(Path(folder).glob(pattern))]


def first_line(train, docs):
    """A reference system: each page's answer is the first training page's first line."""
    return [train[0].text.splitlines()[0]] * len(docs)


class NotAJudge:
    pass
'''
JUDGE_YAML = """\
_target_: my_degen_ext.ShortestJudge
kind: shortest
weight: 0.5
min_score: 2.0        # nothing is good: every chosen answer is the truth, rejected = the judge's worst
require_json: false
"""
SOURCE_YAML = """\
_target_: my_degen_ext.folder_pages
source: folder-pages
folder: ???           # the source's own setting: folder_pages(folder=...)
heldout: 2            # degenbench's: the split and the generation budget
max_new_tokens: 24
"""


@pytest.fixture
def user(tmp_path, monkeypatch):
    """The user's package (on sys.path and PYTHONPATH) and their config folder."""
    pkg, conf = tmp_path / "pkg", tmp_path / "my_conf"
    pkg.mkdir()
    (pkg / "my_degen_ext.py").write_text(textwrap.dedent(PACKAGE))
    for group, name, text in (("judge", "shortest", JUDGE_YAML), ("data", "folder-pages", SOURCE_YAML)):
        (conf / group).mkdir(parents=True, exist_ok=True)
        (conf / group / f"{name}.yaml").write_text(text)
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pkg), os.environ.get("PYTHONPATH", "")]))
    return [f"hydra.searchpath=[file://{conf}]"]


def pages(folder, n, first=0):
    """n synthetic pages (the tiny family's grid) as PNG + txt files: real pages, a user's format."""
    folder.mkdir()
    for d in synthetic.generate(n, 0, cols=16, margin_cols=5, body_lines=2, cell=28, first=first):
        d.image.save(folder / f"{d.id}.png")
        (folder / f"{d.id}.txt").write_text(d.text)
    return str(folder)


def test_a_users_judge_from_its_own_yaml_decides_the_dpo_pairs(user, tmp_path):
    overrides = TINY + user + [f"paths.results_dir={tmp_path / 'out'}", "stage=dpo", "judge=shortest",
                               "pairs.rejected=worst", "pairs.max_pairs_per_doc=1"]
    sweep.check(compose(overrides, return_hydra_config=True))  # the command line's check: importable, a judge
    cfg = compose(overrides)
    run_job(cfg)
    (pairs_dir,) = [d for d in (tmp_path / "out" / "artifacts" / "pairs").iterdir() if d.is_dir()]
    assert pairs_dir.name.endswith(Keys(cfg).pairs)
    judged = pd.read_parquet(pairs_dir / "judged.parquet")
    # its quality, with its YAML's weight, is every candidate's
    assert judged.quality.tolist() == pytest.approx([0.5 / (1 + len(t)) for t in judged.text])
    stats = json.loads((pairs_dir / "stats.json").read_text())
    assert stats["good_candidates"] == 0 and stats["chosen_from_truth"] == stats["docs_with_pairs"] > 0
    ds = datasets.load_from_disk(str(pairs_dir / "dataset"))
    for doc_id, rejected in zip(ds["doc_id"], ds["rejected"]):  # rejected: the judge's worst, the longest
        texts = judged[judged.doc_id == doc_id].text
        longest = max(texts, key=len)
        assert longest in rejected and all(len(t) <= len(longest) for t in texts)
    # the shipped judge keys its pairs as before `_target_` (named or not); another class, its own key
    def pairs_key(*o):
        return Keys(compose(TINY + user + ["stage=dpo", *o])).pairs
    assert pairs_key() == pairs_key("~judge._target_") == pairs_key("judge._target_=degenbench.stages.judge.ReferenceJudge")
    assert pairs_key("judge._target_=my_degen_ext.ShortestJudge") != pairs_key()


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_a_users_document_source_is_a_jobs_data_and_an_evaluation_set(user, tmp_path):
    folder, more = pages(tmp_path / "pages", 6), pages(tmp_path / "more", 3, first=100)
    tiny = [o for o in TINY if not o.startswith("data.")]  # the synthetic data's settings: not this source's
    overrides = tiny + user + [f"paths.results_dir={tmp_path / 'out'}", "stage=vanilla", "data=folder-pages",
                               f"data.folder={folder}", f"eval=[heldout,{{name: more, source: folder-pages, folder: {more}}}]"]
    cfg = compose(overrides)
    docs = load_documents(cfg.data)
    assert sorted(d.id for d in docs) == sorted(p.stem for p in (tmp_path / "pages").glob("*.png"))
    # the command a user runs (their package on PYTHONPATH): the eval set's option is found on their search path
    done = subprocess.run([sys.executable, "-m", "degenbench", *overrides], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {json.loads((d / "metrics.json").read_text())["eval_set"]: d
            for d in (tmp_path / "out" / "runs").iterdir() if d.is_dir()}
    assert set(runs) == {"heldout", "more"}
    held = pd.read_parquet(runs["heldout"] / "predictions.parquet")
    truth = {d.id: d.text for d in docs}
    assert len(held) == 2 and all(truth[i] == t for i, t in zip(held.doc_id, held.truth))
    extra = pd.read_parquet(runs["more"] / "predictions.parquet")
    assert sorted(extra.doc_id) == sorted(p.stem for p in (tmp_path / "more").glob("*.png"))
    assert held.cer.notna().all() and extra.cer.notna().all()
    # keyed by its pages' content and its own _target_: the same pages through a manifest are another source
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"image": f"pages/{d.id}.png", "text": d.text}) + "\n"
                                              for d in docs))
    manifest = compose(["data=manifest", f"data.path={tmp_path / 'm.jsonl'}"]).data
    mine = data_identity(cfg.data, docs, cfg.paths.cache_dir)
    assert mine["_target_"] == "my_degen_ext.folder_pages" and "_target_" not in data_identity(manifest)
    assert mine["pages"] == data_identity(manifest, load_documents(manifest), cfg.paths.cache_dir)["pages"]


def test_a_users_reference_system_runs_beside_the_shipped_ones(user, tmp_path):
    cfg = compose(TINY + [f"paths.results_dir={tmp_path}", "stage=reference", "eval=[heldout]",
                          "reference.systems=[blind-answer,first-line]",
                          "+reference.first-line={_target_: my_degen_ext.first_line, _partial_: true}"])
    sweep.check(cfg)
    run_job(cfg)
    runs = {json.loads((d / "metrics.json").read_text())["family"]: d for d in tmp_path.joinpath("runs").iterdir()
            if d.is_dir()}
    assert set(runs) == {"blind-answer", "first-line"}
    pred = pd.read_parquet(runs["first-line"] / "predictions.parquet")
    assert len(pred) == 4 and pred.prediction.nunique() == 1 and "\n" not in pred.prediction[0]


def one_error(*args, flags=()):
    out = subprocess.run([sys.executable, "-m", "degenbench", *flags, "logger=disabled", *args],
                         capture_output=True, text=True)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    return lines[0]


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_a_bad_target_is_one_line_naming_the_key_before_any_job(user, tmp_path):
    root = f"paths.results_dir={tmp_path / 'out'}"
    line = one_error(root, "stage=dpo", "judge._target_=no_such_pkg.Judge")
    assert "judge._target_='no_such_pkg.Judge' cannot be imported" in line and "PYTHONPATH" in line
    line = one_error(root, *user, "stage=dpo", "judge=shortest", "judge._target_=my_degen_ext.NotAJudge")
    assert "judge._target_='my_degen_ext.NotAJudge' is not a judge: it has no quality method" in line
    line = one_error(root, *user, "stage=dpo", "judge=shortest", "+judge.wieght=1")  # a typo in the YAML
    assert line.startswith("degenbench: judge: my_degen_ext.ShortestJudge does not take these settings")
    line = one_error(root, *user, "data=folder-pages", "data._target_=my_degen_ext.no_such_source", "data.folder=x")
    assert "data._target_='my_degen_ext.no_such_source': my_degen_ext has no 'no_such_source'" in line
    line = one_error(root, "stage=reference", "reference.systems=[blind-answer,mine]")
    assert "reference.systems has unknown systems ['mine']" in line and "reference.<name>" in line
    line = one_error(root, "stage=vanilla,dpo", "judge._target_=no_such_pkg.Judge", flags=["-m"])  # a sweep: refused whole
    assert "judge._target_='no_such_pkg.Judge'" in line
    assert not (tmp_path / "out").exists()


def test_a_setting_the_target_does_not_take_names_the_key(user):
    from degenbench.stages.judge import build

    with pytest.raises(ValueError, match=r"^judge: my_degen_ext.ShortestJudge does not take these settings "
                                         r"\(got an unexpected keyword argument 'wieght'\)"):
        build(compose(user + ["judge=shortest", "+judge.wieght=1"]).judge)
    with pytest.raises(ValueError, match=r"^data.folder is not set"):
        load_documents(compose(user + ["data=folder-pages"]).data)
    with pytest.raises(ValueError, match=r"data names 'manifest' but its _target_ is "
                                         r"'degenbench.documents.synthetic.generate'"):
        load_documents(compose(["data.source=manifest"]).data)


def test_a_target_whose_module_fails_to_import_says_so(tmp_path, monkeypatch):
    from degenbench.stages.judge import check

    (tmp_path / "broken_ext.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"^judge._target_='broken_ext.Judge': its module is found, but importing it "
                                         r"fails \(No module named 'no_such_dependency'\)"):
        check(compose(["judge._target_=broken_ext.Judge"]).judge)
