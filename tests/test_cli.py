"""The `degenbench` command: config resolution, help, and errors a user sees."""
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from degenbench.config import CONF_DIR, compose, known_families

# The shipped families' hub ids (a family added to conf/family/ needs no entry: the checks below
# iterate the config group)
REAL = {"qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
        "nanonets-ocr2-3b": "nanonets/Nanonets-OCR2-3B", "olmocr-2-7b": "allenai/olmOCR-2-7B-1025",
        "gemma-3-4b": "google/gemma-3-4b-it"}


def degenbench(*args):
    return subprocess.run([sys.executable, "-m", "degenbench", *args], capture_output=True, text=True)


def test_the_families_are_the_config_groups_files_less_the_shared_defaults():
    files = sorted(p.stem for p in (CONF_DIR / "family").glob("*.yaml"))
    assert {"_base", "_qwen2_5_vl", "_gemma3"} <= set(files)
    assert known_families() == [f for f in files if not f.startswith("_")]
    assert set(REAL) <= set(known_families())
    for name, hub_id in REAL.items():
        assert compose([f"family={name}", "family.size=real"]).family.pretrained == hub_id


@pytest.mark.parametrize("name", known_families())
def test_real_family_config_resolves(name):
    cfg = compose([f"family={name}", "family.size=real"])
    fam = OmegaConf.to_container(cfg.family, resolve=True)
    assert fam["hub_id"] == fam["pretrained"] and fam["name"] == name
    assert fam["dtype"] == "bfloat16" and fam["trust_remote_code"] is False
    assert 0 < fam["min_pixels"] <= fam["max_pixels"]
    assert "language_model" in fam["lora_target_modules"] and fam["prompt"]
    tiny = OmegaConf.to_container(compose([f"family={name}"]).family, resolve=True)
    assert tiny["pretrained"].endswith(f"standins/{name}") and tiny["dtype"] == "float32"


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_cfg_job_resolves_from_the_command_line():
    out = degenbench("family=olmocr-2-7b", "family.size=real", "--cfg", "job", "--resolve")
    assert out.returncode == 0, out.stderr
    assert "pretrained: allenai/olmOCR-2-7B-1025" in out.stdout
    assert "model_class: transformers.Qwen2_5_VLForConditionalGeneration" in out.stdout


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_unknown_family_lists_the_known_ones():
    out = degenbench("family=qwen3-vl", "logger=disabled")
    assert out.returncode != 0
    assert "Could not find 'family/qwen3-vl'" in out.stderr
    for name in known_families():
        assert name in out.stderr
    assert "_base" not in out.stderr  # shared defaults are not options


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_shared_defaults_are_no_family():
    out = degenbench("family=_qwen2_5_vl_3b", "logger=disabled")
    assert out.returncode == 2 and "leaves family.name, family.hub_id" in out.stderr


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_unknown_size_and_stage_are_clear_errors():
    out = degenbench("family.size=huge", "logger=disabled")
    assert out.returncode != 0 and "family.size='huge' is unknown; use one of real, shape, tiny" in out.stderr
    out = degenbench("stage=rlhf", "logger=disabled")
    assert out.returncode != 0 and "stage='rlhf' is unknown" in out.stderr


def test_help_lists_groups():
    out = degenbench("--help")
    assert out.returncode == 0
    assert f"family: {', '.join(known_families())}\n" in out.stdout and "_base" not in out.stdout
    assert "logger: disabled, offline, online" in out.stdout


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_experiments_that_sweep_beta_choose_it_on_validation(experiment):
    """An experiment's settings win over the root config's own (`eval` among them), and a sweep
    over beta evaluates a validation split, where the analysis chooses beta."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    if "dpo.beta" in cfg.hydra.sweeper.params:
        assert "validation" in cfg.eval and cfg.data.validation > 0
    from degenbench.documents.evalsets import budget_name, eval_sets

    # every eval set parses; a mapping is named by its `name` (and its budget, e.g. tall@4x)
    named = [e if isinstance(e, str) else budget_name(e.name, e.get("budget", 1)) for e in cfg.eval]
    assert [s.name for s in eval_sets(cfg, None)] == named


def test_toy_is_one_seed_and_toy3_the_same_sweep_over_three():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from degenbench.documents.evalsets import eval_sets, generation

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        toy, toy3 = (hydra_compose(config_name="config", overrides=[f"experiment={e}"], return_hydra_config=True)
                     for e in ("toy", "toy3"))
    one, three = toy.hydra.sweeper.params, toy3.hydra.sweeper.params
    assert str(one.seed) == "0" and three.seed == "0,1,2"
    assert {k: v for k, v in one.items() if k != "seed"} == {k: v for k, v in three.items() if k != "seed"}
    assert one.stage.split(",") == ["vanilla", "sft", "dpo", "reference"] and len(one.family.split(",")) == 5
    strip = lambda c: OmegaConf.to_container(c, resolve=False) | {"hydra": None}  # noqa: E731
    assert strip(toy) == strip(toy3)  # the same jobs: only the seeds differ
    sets = {s.name: s for s in eval_sets(toy, None)}
    assert list(sets) == ["heldout", "validation", "heldout@4x"]
    assert generation(toy, sets["heldout@4x"]).max_new_tokens == 4 * toy.data.max_new_tokens == 1024
