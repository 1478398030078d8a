"""Sweeps: the grid's jobs that cannot differ are left out, every experiment config runs end to
end in its smoke form (`debug=smoke`, as lightning-hydra-template's test_sweeps runs its
experiments), and the command line says what it is and where it is."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import grid
from degenbench import __version__, sweep
from degenbench.config import CONF_DIR, compose

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_the_toy_grid_runs_only_the_jobs_that_can_differ():
    jobs = grid("experiment=toy")
    kept, dropped = sweep.distinct(jobs, compose)
    assert (len(jobs), len(kept), len(dropped)) == (60, 26, 34)
    stages = [compose(j).stage for j in kept]
    assert {s: stages.count(s) for s in set(stages)} == {"vanilla": 5, "sft": 5, "dpo": 15, "reference": 1}
    for job, first in dropped:  # each left-out job would only find the kept job's runs complete
        a, b = compose(job), compose(first)
        assert a.stage == b.stage and a.stage != "dpo" and sweep.identity(a) == sweep.identity(b)
    # what a stage reads still tells jobs apart: a mitigation changes SFT's evaluation, not the references'
    small = grid("stage=sft,reference", "family=qwen2.5-vl-3b,gemma-3-4b", "mitigation=none,repetition_penalty")
    kept, _ = sweep.distinct(small, compose)
    assert (len(small), len(kept)) == (8, 5)


def test_jobs_are_taken_family_by_family_in_turn():
    """Two jobs side by side (hydra/launcher=parallel) are then other families': each family's
    vanilla job, then each SFT job, then the DPO jobs, each family's own in their order."""
    jobs = [f"{f}-{s}" for f in ("a", "b") for s in ("vanilla", "sft", "dpo1", "dpo2")] + ["ref", "c-vanilla"]
    groups = [j.split("-")[0] if j != "ref" else "" for j in jobs]
    assert sweep.interleave(jobs, groups) == ["a-vanilla", "b-vanilla", "ref", "c-vanilla", "a-sft", "b-sft",
                                              "a-dpo1", "b-dpo1", "a-dpo2", "b-dpo2"]
    kept, _ = sweep.distinct(grid("stage=vanilla,sft", "family=qwen2.5-vl-3b,gemma-3-4b"), compose)
    assert [(compose(j).family.name, compose(j).stage) for j in kept] == [
        ("qwen2.5-vl-3b", "vanilla"), ("gemma-3-4b", "vanilla"), ("qwen2.5-vl-3b", "sft"), ("gemma-3-4b", "sft")]


def test_a_sweep_that_no_config_can_run_is_refused_before_any_job():
    with pytest.raises(sweep.ConfigError, match=r"^dpo.beta=-1 must be > 0 .*\(job stage=dpo dpo.beta=-1\)$"):
        sweep.distinct([["stage=dpo", "dpo.beta=-1"]], compose)


def test_a_users_own_configs_come_through_hydras_search_path(tmp_path):
    """A family and a data option in the user's folder (hydra.searchpath): the family composes, and
    the data option is an evaluation set by name, as the shipped ones are."""
    (tmp_path / "family").mkdir(), (tmp_path / "data").mkdir()
    shipped = (CONF_DIR / "family" / "qwen2.5-vl-3b.yaml").read_text()
    (tmp_path / "family" / "my-ocr.yaml").write_text(shipped.replace("name: qwen2.5-vl-3b", "name: my-ocr"))
    (tmp_path / "data" / "my-bench.yaml").write_text("defaults:\n  - synthetic\n  - _self_\nn_docs: 8\nseed: 5\n")
    mine = [f"hydra.searchpath=[file://{tmp_path}]", "family=my-ocr", "eval=[heldout,my-bench]"]
    cfg = compose(mine, return_hydra_config=True)
    sweep.check(cfg)
    assert cfg.family.name == "my-ocr"
    from degenbench.documents.evalsets import _external
    assert _external("my-bench", "eval[1]", list(cfg.hydra.searchpath))[1].n_docs == 8
    with pytest.raises(ValueError, match=r"eval\[1\]='my-bench' is unknown"):
        sweep.check(compose(["eval=[heldout,my-bench]"], return_hydra_config=True))


def test_help_is_a_short_page_and_version_prints():
    run = lambda *a: subprocess.run([sys.executable, "-m", "degenbench", *a], capture_output=True, text=True)  # noqa: E731
    page = run("--help")
    assert page.returncode == 0 and len(page.stdout.splitlines()) < 45
    for said in ("stage=vanilla | sft | dpo | reference", "debug=smoke", "degenbench-report", "degenbench-provenance",
                 "--cfg job", "experiment: best_of_n, losses, mitigations", "dpo: apo_zero, default, ipo, kto"):
        assert said in page.stdout, said
    assert "max_new_tokens" not in page.stdout  # the config dump stays behind --cfg job
    assert run("--version").stdout == f"degenbench {__version__}\n"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_end_to_end_in_its_smoke_form(experiment, tmp_path):
    """`degenbench experiment=<name> debug=smoke` through the command line, from another folder:
    every job finishes and the sweep's summary table names each stage it swept."""
    out = subprocess.run([sys.executable, "-m", "degenbench", f"experiment={experiment}", "debug=smoke",
                          f"paths.results_dir={tmp_path / 'out'}"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (summary,) = Path(tmp_path / "out" / "hydra").glob("multirun_*/summary.md")
    stages = {s for s in compose([f"experiment={experiment}"], return_hydra_config=True)
              .hydra.sweeper.params.get("stage", "vanilla").split(",")}
    for stage in stages:
        assert f"| {stage} " in summary.read_text(), stage
