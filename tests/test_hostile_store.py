"""A store of runs and artifacts that was damaged or is incomplete (issue 28): the report names
what it cannot read and makes the tables it can. Real run records: the committed toy sweep's."""
import shutil
from pathlib import Path

import pytest

from degenbench.analysis import report
from degenbench.analysis.runs import load_runs

TOY = Path(__file__).resolve().parent.parent / "results" / "toy" / "runs"


def _store(tmp_path, keep=lambda name: True) -> Path:
    runs = tmp_path / "runs"
    for d in sorted(TOY.iterdir()):
        if d.is_dir() and keep(d.name) and d.name.startswith("qwen2.5-vl-3b-"):  # one family: fast
            shutil.copytree(d, runs / d.name)
    return runs


@pytest.mark.parametrize("damage", [lambda text: text[: len(text) // 2],  # the default run: one kind of damage
                                    pytest.param(lambda text: "[1, 2]", marks=pytest.mark.slow),
                                    pytest.param(lambda text: "", marks=pytest.mark.slow)])
def test_an_unreadable_run_record_is_a_named_counted_skip_in_the_report(tmp_path, damage):
    runs = _store(tmp_path)
    bad = next(d for d in sorted(runs.iterdir()) if "-sft-heldout-" in d.name)
    (bad / "metrics.json").write_text(damage((bad / "metrics.json").read_text()))
    loaded = load_runs(runs)
    assert bad.name not in set(loaded.run_id) and [r["run"] for r in loaded.attrs["unreadable"]] == [bad.name]
    report.main(["--runs", str(runs), "--out", str(tmp_path / "out"), "--no-figures"])
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "**1 unreadable run records**" in readme and f"- `{bad.name}`: " in readme
    assert "## Figures" not in readme and not list((tmp_path / "out").glob("*.png"))  # --no-figures: tables only


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_a_store_of_dpo_runs_without_their_sft_runs_gives_the_tables_it_can(tmp_path):
    runs = _store(tmp_path, keep=lambda name: "-sft-" not in name)
    report.main(["--runs", str(runs), "--out", str(tmp_path / "out"), "--no-figures"])
    out = tmp_path / "out"
    assert (out / "beta_sweep.csv").is_file() and (out / "stages.csv").is_file()
    readme = (out / "README.md").read_text()
    assert "**Tables left empty**" in readme and "`reduction` (SFT and DPO runs" in readme


@pytest.fixture
def copied_chain(chain, tmp_path):
    return shutil.copytree(chain.root, tmp_path / "copy", ignore=shutil.ignore_patterns("wandb", "*.lock"))


@pytest.mark.parametrize("damage, found", [
    (lambda b: b[:1000] + bytes(255 - x for x in b[1000:1064]) + b[1064:], "its bytes changed"),  # overwritten
    pytest.param(lambda b: b[: len(b) // 2], "bytes, recorded", marks=pytest.mark.slow),  # cut short
])
def test_a_damaged_artifact_is_refused_naming_its_file_and_the_fix(copied_chain, damage, found):
    """A finished DPO model whose safetensors changed: the next job needing it (a new evaluation set)
    stops, naming the file, instead of evaluating broken weights under the old key."""
    from conftest import CHAIN
    from degenbench.config import compose
    from degenbench.stages.graph import run_job
    from degenbench.stages.store import DamagedArtifact

    (weights,) = (copied_chain / "artifacts" / "dpo").glob("*-b0.1-*/model/*.safetensors")
    weights.write_bytes(damage(weights.read_bytes()))
    cfg = compose(CHAIN + [f"paths.results_dir={copied_chain}", "stage=dpo", "dpo.beta=0.1", "eval=[heldout@2x]"])
    with pytest.raises(DamagedArtifact, match=rf"artifact .*-b0.1-\w+ is damaged: model/{weights.name}: .*{found}.*"
                                              r"delete the folder \(rm -rf .*\) and rerun"):
        run_job(cfg)
    assert not list((copied_chain / "runs").glob("*-heldout@2x-*"))  # nothing evaluated


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_two_identical_evaluations_at_once_generate_once(tmp_path):
    """Two processes start the same evaluation: one generates, the other waits for it and finds the
    run done (the landed code generated every page twice)."""
    import subprocess
    import sys

    from conftest import TINY
    cmd = [sys.executable, "-m", "degenbench", *TINY, "logger=disabled", f"paths.results_dir={tmp_path}", "stage=vanilla"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert sum(" on 4 documents of heldout" in log for log in logs) == 1, logs
    assert sum("evaluated by a concurrent job" in log for log in logs) + sum("already evaluated" in log for log in logs) == 1


def test_a_full_disk_during_a_checkpoint_is_named_as_such(tmp_path):
    """A 3 MB disk (tmpfs) for the results: SFT's first checkpoint does not fit."""
    import errno
    import subprocess

    from conftest import TINY
    from degenbench.config import compose
    from degenbench.stages.graph import run_job

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with pytest.raises(OSError, match=r"the disk holding .* is full \(\d+ MB free\) while saving a checkpoint") as e:
            run_job(compose(TINY + ["stage=sft", f"paths.results_dir={disk}", "checkpoint.save_steps=1"]))
        assert e.value.errno == errno.ENOSPC
    finally:
        subprocess.run(["umount", str(disk)])


def test_a_folder_given_as_an_image_is_named_as_a_folder(tmp_path):
    import json as js

    from degenbench.config import compose
    from degenbench.documents import load_documents

    (tmp_path / "pages").mkdir()
    (tmp_path / "m.jsonl").write_text(js.dumps({"image": "pages", "truth": {"text": "x"}}))
    with pytest.raises(ValueError, match=r"row 1: 'image' names the folder .*pages, not an image file"):
        load_documents(compose(["data=manifest", f"data.path={tmp_path / 'm.jsonl'}"]).data)
