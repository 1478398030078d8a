"""The vLLM backend against the installed vLLM package. vLLM brings its own torch and cannot
generate without a GPU, but it installs on a CPU machine and its parameter classes and its
repetition check run there: benchmarks/vllm_check.py checks degenbench's mapping onto them and
replays vLLM's repetition check on real loop outputs. Slow (a vLLM venv is ~9 GB):

    python3 -m venv .venv-vllm && .venv-vllm/bin/pip install -e ".[vllm]"
    pytest -m slow tests/test_vllm.py          # or DEGENBENCH_VLLM_PYTHON=/path/to/python
"""
import os
import subprocess
from pathlib import Path

import pytest

from degenbench.config import ROOT

pytestmark = pytest.mark.slow
PYTHON = Path(os.environ.get("DEGENBENCH_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))


def test_vllm_mapping_and_its_repetition_check_agree_with_degenbench(tmp_path):
    if not PYTHON.exists():
        pytest.skip(f"no Python with vLLM at {PYTHON}: see this module's docstring")
    out = subprocess.run([str(PYTHON), "benchmarks/vllm_check.py", "--limit", "20", "--out", str(tmp_path / "v.md")],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    report = (tmp_path / "v.md").read_text()
    assert "FAILED" not in report and report.count("- ok:") >= 9
    rows = [r.split("|") for r in report.splitlines() if r.startswith("| ") and "%" in r]
    assert len(rows) == 5 and all(r[9].strip() == "100.00%" for r in rows)  # labels as HF LoopStop gives them
