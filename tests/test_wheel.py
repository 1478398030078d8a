"""The wheel works outside the checkout: configs, stand-ins and the sweeper travel inside it."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from degenbench.config import ROOT


@pytest.mark.slow
def test_the_wheel_runs_a_smoke_sweep_from_another_folder(tmp_path):
    """Build the wheel, install it (no dependencies) into a fresh venv that borrows this
    environment's installed packages (not its editable degenbench: a plain path entry runs no
    .pth file), and run `degenbench experiment=toy debug=smoke` from a folder far from the checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
                   check=True, timeout=600)
    (wheel,) = wheels.glob("degenbench-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # the dependencies
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "-q", str(wheel)], check=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([venv / "bin" / "python", "-c", "import degenbench, hydra_plugins.degenbench_sweeper as s; "
                            "print(degenbench.__file__); print(s.__file__)"], capture_output=True, text=True,
                           cwd=work, env=env, check=True).stdout.split()
    assert all(p.startswith(str(venv)) for p in where), where  # the wheel's copies, not the checkout's
    run = subprocess.run([venv / "bin" / "degenbench", "experiment=toy", "debug=smoke"], capture_output=True,
                         text=True, cwd=work, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    said = run.stdout + run.stderr
    assert "4 jobs (4 grid points" in said and "summary of the sweep's 13 runs" in said
    (summary,) = (work / "outputs" / "hydra").glob("multirun_*/summary.md")
    assert "| qwen2.5-vl-3b | dpo " in summary.read_text()
    assert len(list((work / "outputs" / "runs").glob("*/_COMPLETE.json"))) == 13  # vanilla, SFT, DPO, references: here
    version = subprocess.run([venv / "bin" / "degenbench", "--version"], capture_output=True, text=True, cwd=work, env=env)
    assert version.stdout.startswith("degenbench ")
