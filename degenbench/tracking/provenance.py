"""What produced a result: the code (git), the installed packages against constraints.txt, the
device and host CPU, and which checkpoint a family loaded. Everything here is cheap and JSON-serialisable.

    python -m degenbench.tracking.provenance [--check]   # git, versions, pins; --check: exit 1 if a pin differs
"""
from __future__ import annotations

import datetime
import functools
import importlib.metadata as md
import json
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from degenbench import io
from degenbench.config import ROOT

PACKAGES = ("torch", "torchvision", "transformers", "tokenizers", "trl", "peft", "datasets", "accelerate",
            "degenbench")
OPTIONAL = ("vllm",)  # recorded only where installed
SHA = re.compile(r"[0-9a-f]{40}")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(root: str | Path = ROOT) -> dict:
    """{"commit", "dirty", "describe"} of the checkout at `root`; None values where `root` is not the
    top of a git checkout (a pip-installed package: site-packages may sit inside another checkout,
    e.g. a .venv inside this one, whose commit says nothing about the installed code).
    Dirty = a tracked file changed or an untracked, not ignored file exists, outside results/:
    runs and degenbench-report write under results/ by default (runs/, artifacts/ and hydra/ are
    gitignored; the committed tables are rewritten by a report), and neither changes the code."""
    root = Path(root).resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:
        return {"commit": None, "dirty": None, "describe": None}
    status = _git(root, "status", "--porcelain", "--", ".", ":(exclude)results")
    return {"commit": _git(root, "rev-parse", "HEAD"), "dirty": None if status is None else bool(status),
            "describe": _git(root, "describe", "--tags", "--always")}


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    found = {"python": platform.python_version()}
    for name in PACKAGES + OPTIONAL:  # metadata only: nothing is imported
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            if name not in OPTIONAL:
                found[name] = None
    return tuple(found.items())


def versions() -> dict:
    """Python's and the key packages' versions (vllm only where installed), from their metadata."""
    return dict(_versions())


def environment_pins(path: str | Path = ROOT / "constraints.txt") -> dict:
    """The installed version of every distribution constraints.txt pins, against the pin. `differ`:
    installed but outside the pin; `missing`: pinned but not installed (a pin constrains, it does not
    install: e.g. CUDA wheels on a CPU-only torch). matches is None where there is no constraints file
    (a pip-installed degenbench)."""
    from packaging.requirements import InvalidRequirement, Requirement

    path = Path(path)
    if not path.is_file():
        return {"constraints": None, "matches": None, "differ": {}, "missing": []}
    differ, missing = {}, []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):  # options (-c, -r, --index-url)
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            differ[line] = {"pinned": line, "installed": "unparsed line"}
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = md.version(req.name)
        except md.PackageNotFoundError:
            missing.append(req.name)
            continue
        if not req.specifier.contains(installed, prereleases=True):  # 2.14.1+cpu satisfies ==2.14.1
            pinned = str(req.specifier)
            differ[req.name] = {"pinned": pinned[2:] if pinned.startswith("==") else pinned, "installed": installed}
    return {"constraints": str(path), "matches": not differ, "differ": differ, "missing": missing}


def device_info(device=None, dtype=None) -> dict:
    """The device a job ran on and its dtype (None where not given: nothing is guessed).
    count: the visible GPUs on cuda, else the CPU cores."""
    import torch

    try:
        dev = None if device is None else torch.device(device)
    except (TypeError, RuntimeError):  # something that is not a device: recorded, never fatal
        dev = None
    kind, name, count = (dev.type if dev is not None else None), None, None
    if kind == "cuda" and torch.cuda.is_available():
        name, count = torch.cuda.get_device_name(dev), torch.cuda.device_count()
    elif kind is not None:
        name, count = ("Apple MPS" if kind == "mps" else _cpu_name()), os.cpu_count()
    return {"type": kind if dev is not None else (None if device is None else str(device)), "name": name, "count": count,
            "cuda": torch.version.cuda, "dtype": None if dtype is None else str(dtype).removeprefix("torch.")}


@functools.cache
def _cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict:
    """The machine's CPU as torch uses it. CPU numerics differ between hosts (the kernel torch picks
    for the CPU's instruction set, the thread count's reduction order), so a CPU run's exact numbers
    hold for this record's host, not for every machine."""
    import torch

    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _local(directory: Path) -> dict:
    config = directory / "config.json"
    commit = json.loads(config.read_text()).get("_commit_hash") if config.is_file() else None
    if commit is None and directory.parent.name == "snapshots" and SHA.fullmatch(directory.name):
        commit = directory.name  # a hub cache snapshot: models--org--name/snapshots/<commit>/
    return {"path": str(directory.resolve()), "fingerprint": io.fingerprint(directory), "commit": commit}


def checkpoint_identity(family: DictConfig) -> dict:
    """What the family's model is. real: the hub id at `family.revision` (a 40-hex commit is a pin,
    a branch is not), or a local folder's fingerprint; tiny: the stand-in's recipe hash and folder
    (not built here: a folder that does not exist yet is reported as such); shape: the architecture
    config with random weights, and the stand-in whose processor encodes the pages."""
    from degenbench.models import recipes, standins

    out = {"family": family.name, "size": family.size, "hub_id": family.hub_id}
    if family.size == "real":
        source = str(family.pretrained)
        if Path(source).is_dir():
            return out | {"source": "local"} | _local(Path(source))
        revision = OmegaConf.select(family, "revision", default=None)
        return out | {"source": "hub", "pretrained": source, "revision": revision,
                      "pinned": bool(revision and SHA.fullmatch(str(revision)))}
    shipped = Path(family.sizes.tiny.pretrained)
    recipe = recipes.recipe_hash(family)
    folder = shipped if standins.current(shipped, family) else Path(family.standin.cache_dir) / f"{family.name}-{recipe}"
    standin = {"recipe": recipe, "path": str(folder), "exists": folder.is_dir(),
               "fingerprint": io.fingerprint(folder) if folder.is_dir() else None}
    if family.size == "tiny":
        return out | {"source": "standin"} | standin
    return out | {"source": "shape", "config": OmegaConf.to_container(family.sizes.shape.config, resolve=True),
                  "processor_from": standin}


def collect(cfg: DictConfig, device=None, dtype=None) -> dict:
    """Everything above for one job: record it beside the job's results."""
    return {"git": git_state(), "versions": versions(), "environment": environment_pins(),
            "device": device_info(device, dtype), "host": host_info(),
            "checkpoint": checkpoint_identity(cfg.family), "command": list(sys.argv),
            "hostname": socket.gethostname(),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    report = {"git": git_state(), "versions": versions(), "environment": environment_pins()}
    print(json.dumps(report, indent=2))
    env = report["environment"]
    if "--check" in argv and env["matches"] is False:
        print(f"installed packages differ from {env['constraints']}: {env['differ']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
