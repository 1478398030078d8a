"""Provenance: the git state, the pinned environment, the device and the checkpoint identity."""
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

from degenbench.tracking import provenance
from degenbench.models import recipes
from degenbench.config import CONF_DIR, ROOT, compose

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@needs_git
def test_dirty_flips_with_a_tracked_change_but_not_with_results_or_ignored_files(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("outputs/\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("| a |\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    state = provenance.git_state(tmp_path)
    assert state["commit"] == git(tmp_path, "rev-parse", "HEAD") and len(state["commit"]) == 40
    assert state["dirty"] is False and state["describe"] == state["commit"][:len(state["describe"])]

    (tmp_path / "outputs").mkdir()  # gitignored
    (tmp_path / "outputs" / "log.txt").write_text("run\n")
    (tmp_path / "results" / "runs").mkdir()  # what a run writes
    (tmp_path / "results" / "runs" / "metrics.json").write_text("{}")
    (tmp_path / "results" / "table.md").write_text("| b |\n")  # a regenerated committed table
    assert provenance.git_state(tmp_path)["dirty"] is False

    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_state(tmp_path)["dirty"] is True
    git(tmp_path, "checkout", "--", "code.py")
    assert provenance.git_state(tmp_path)["dirty"] is False
    (tmp_path / "new_module.py").write_text("y = 1\n")  # untracked code outside results/
    assert provenance.git_state(tmp_path)["dirty"] is True


@needs_git
def test_no_git_values_outside_a_checkout_or_below_its_top(tmp_path):
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None, "describe": None}
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("a\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    inner = tmp_path / ".venv" / "site-packages"  # an installed package inside some checkout
    inner.mkdir(parents=True)
    assert provenance.git_state(inner) == {"commit": None, "dirty": None, "describe": None}
    assert provenance.git_state(tmp_path)["commit"] is not None


def test_versions_are_the_installed_distributions():
    v = provenance.versions()
    assert v["python"] == platform.python_version()
    for name in provenance.PACKAGES:
        assert v[name] == md.version(name)
    try:
        vllm = md.version("vllm")
    except md.PackageNotFoundError:
        vllm = None
    assert v.get("vllm") == vllm and ("vllm" in v) == (vllm is not None)
    v["torch"] = "changed"  # callers get a copy, not the cache
    assert provenance.versions()["torch"] == md.version("torch")


def test_environment_pins_report_a_differing_pin_and_a_missing_distribution(tmp_path):
    path = tmp_path / "constraints.txt"
    path.write_text(f"# a comment\n-r other.txt\ntorch=={md.version('torch')}\npackaging==0.0.1  # wrong\n"
                    "not-a-distribution-xyz==1.0\ntransformers==0.1; python_version < '3'\n")
    env = provenance.environment_pins(path)
    assert env["constraints"] == str(path) and env["matches"] is False
    assert env["differ"] == {"packaging": {"pinned": "0.0.1", "installed": md.version("packaging")}}
    assert env["missing"] == ["not-a-distribution-xyz"]
    path.write_text(f"torch=={md.version('torch')}\n")
    assert provenance.environment_pins(path) == {"constraints": str(path), "matches": True, "differ": {}, "missing": []}
    assert provenance.environment_pins(tmp_path / "none.txt")["constraints"] is None


def test_shipped_constraints_pin_every_dependency_within_pyproject_ranges():
    tomllib = pytest.importorskip("tomllib")
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", line
            pins[req.name.lower().replace("_", "-")] = next(iter(req.specifier)).version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "degenbench" not in pins
    for dep in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(dep)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req.specifier}"


def test_device_info_records_type_and_dtype():
    info = provenance.device_info(torch.device("cpu"), torch.bfloat16)
    assert info["type"] == "cpu" and info["dtype"] == "bfloat16" and info["cuda"] == torch.version.cuda
    assert provenance.device_info("cpu", "float32")["dtype"] == "float32"
    if torch.cuda.is_available():
        cuda = provenance.device_info("cuda:0", torch.float16)
        assert cuda["name"] == torch.cuda.get_device_name(0) and cuda["count"] == torch.cuda.device_count()


def test_checkpoint_identity_of_hub_revisions_local_folders_and_standins(tmp_path):
    def family(*overrides):
        return compose(["family=qwen2.5-vl-3b", *overrides]).family

    pinned = provenance.checkpoint_identity(family("family.size=real"))
    assert pinned == provenance.checkpoint_identity(family("family.size=real"))  # stable
    assert pinned["pinned"] and pinned["revision"] == family().revision and pinned["pretrained"] == family().hub_id
    main = provenance.checkpoint_identity(family("family.size=real", "family.revision=main"))
    assert main != pinned and not main["pinned"]

    snap = tmp_path / "models--Qwen--x" / "snapshots" / ("ab" * 20)  # a hub cache snapshot
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (snap / "model.safetensors").write_bytes(b"0" * 10)
    local = family("family.size=real", f"family.sizes.real.pretrained={snap}")
    first = provenance.checkpoint_identity(local)
    assert first["source"] == "local" and first["commit"] == "ab" * 20
    assert provenance.checkpoint_identity(local) == first
    (snap / "model.safetensors").write_bytes(b"0" * 11)  # other weights
    assert provenance.checkpoint_identity(local)["fingerprint"] != first["fingerprint"]

    tiny = provenance.checkpoint_identity(family())
    assert tiny["recipe"] == recipes.recipe_hash(family()) and tiny["exists"]
    assert tiny["path"] == str(family().sizes.tiny.pretrained)  # the shipped base
    changed = provenance.checkpoint_identity(family("family.standin.seed=99"))
    assert changed["recipe"] != tiny["recipe"] and changed["path"] != tiny["path"]
    shape = provenance.checkpoint_identity(family("family.size=shape"))
    assert shape["config"]["text_config"]["hidden_size"] == 2048 and shape["processor_from"]["recipe"] == tiny["recipe"]


def test_collect_is_plain_json():
    cfg = compose(["family=gemma-3-4b"])
    record = provenance.collect(cfg, torch.device("cpu"), torch.float32)
    assert json.loads(json.dumps(record)) == record  # only JSON types: nothing turns into a string or list
    assert {"git", "versions", "environment", "device", "host", "checkpoint", "command", "hostname", "time"} <= set(record)
    # the host whose CPU numerics a CPU run's exact numbers hold for
    assert record["host"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["host"]["torch_threads"] == torch.get_num_threads() and record["host"]["cores"] == os.cpu_count()
    assert isinstance(record["host"]["cpu"], str) and record["host"]["cpu"]
    assert record["device"]["dtype"] == "float32" and record["checkpoint"]["family"] == "gemma-3-4b"
    assert provenance.collect(cfg)["device"] | {"cuda": None} == {"type": None, "name": None, "count": None,
                                                                  "cuda": None, "dtype": None}  # not guessed


def test_main_check_fails_when_a_pin_differs(monkeypatch, capsys):
    assert provenance.main([]) == 0 and "versions" in json.loads(capsys.readouterr().out)
    monkeypatch.setattr(provenance, "environment_pins", lambda: {"constraints": "c.txt", "matches": False,
                                                                 "differ": {"x": {}}, "missing": []})
    assert provenance.main([]) == 0 and provenance.main(["--check"]) == 1


def test_every_family_pins_a_hub_commit_or_says_main():
    for path in sorted((CONF_DIR / "family").glob("*.yaml")):
        revision = str(compose([f"family={path.stem}"]).family.revision)
        assert provenance.SHA.fullmatch(revision) or revision == "main", (path.name, revision)
