"""Every benchmark script runs, at its --smoke size, in this process: a key that moves breaks a test
here, not a benchmark someone runs later (issue 32). Smoke numbers mean nothing; each test checks
that the script reached its table and that the table says what the script measures."""
from __future__ import annotations

import re
import runpy
import sys

import pytest

from degenbench.config import ROOT

BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One artifact store for the module: the smoke SFT model is built by the first script, reused after."""
    return tmp_path_factory.mktemp("bench-store")


def bench(script: str, store, tmp_path, *args: str) -> str:
    """Run benchmarks/<script> --smoke as `python benchmarks/<script>` would, in this process; its
    --out file."""
    out = tmp_path / f"{script}.md"
    argv = [str(BENCH / script), "--smoke", "--results-dir", str(store), "--out", str(out), *args]
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv, sys.path = argv, [str(BENCH), *sys.path]
    try:
        runpy.run_path(str(BENCH / script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    text = out.read_text()
    assert text.startswith("# ") and "Made by: `python " in text and "--smoke" in text
    return text


def rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in `text`, as cells (a table's header is the line above
    its |---| separator)."""
    lines = text.splitlines()
    sep = [i for i, line in enumerate(lines) if re.match(r"\|\s*:?-", line)]
    skip = set(sep) | {i - 1 for i in sep}
    return [[c.strip() for c in line.strip("|").split("|")] for i, line in enumerate(lines)
            if line.startswith("|") and i not in skip]


def test_eval_throughput(store, tmp_path):
    table = rows(bench("eval_throughput.py", store, tmp_path))
    assert [r[0] for r in table] == ["1", "4"]  # the smoke batch sizes
    assert all(float(r[1]) > 0 and r[5].endswith("x") for r in table)


def test_metrics_share(store, tmp_path):
    import degenbench.decoding.generate as generation
    from degenbench.decoding.loopstop import LoopStop

    text = bench("metrics_share.py", store, tmp_path)
    assert "| generation |" in text and "| detector alone" in text and "outputs degenerate" in text
    assert generation.LoopStop is LoopStop  # the script's timing wrapper is taken out again


def test_memory(store, tmp_path):
    table = rows(bench("memory.py", store, tmp_path))
    assert len(table) == 4 and {r[2] for r in table} == {"sft", "dpo"}  # one family, two settings, two stages
    assert all(float(r[-1].strip("*")) > 0 for r in table)


def test_integrity(store, tmp_path):
    text = bench("integrity.py", store, tmp_path)
    assert "1 MB artifact, 1 runs" in text and "| verify (size + SHA-256" in text


def test_loop_probe(store, tmp_path):
    table = rows(bench("loop_probe.py", store, tmp_path))
    assert [r[1] for r in table] == ["toy", "same-rows", "tall", "tall-same"] and all(r[2] == "2" for r in table)


def test_train_steps(store, tmp_path):
    table = rows(bench("train_steps.py", store, tmp_path))
    assert [(r[0], r[1]) for r in table] == [("sft", "lora"), ("dpo", "lora"), ("sft", "full"), ("dpo", "full")]
    assert all(float(r[2]) > 0 for r in table)


def test_real_size(store, tmp_path):
    """The script a lent GPU runs (decode against the bandwidth bound, an SFT and a DPO step through
    TRL): --smoke runs the same code on the CPU."""
    text = bench("real_size.py", store, tmp_path)
    assert "| SFT (LoRA" in text and "| DPO (LoRA" in text and "| 2 | " in text


def test_loop_cost(store, tmp_path):
    """Static batching's cost of loops to the healthy rows: each row's steps against the same pages
    without their looping rows (debug=smoke's looper may not loop: then the two are equal)."""
    text = bench("loop_cost.py", store, tmp_path, "--threads", "1")
    table = [r for r in rows(text) if r[0] == "nanonets-ocr2-3b"]
    assert [r[1] for r in table] == ["32", "64"] and "42.47%" in text  # beside the paper's figure
    for r in table:
        steps, clean = map(int, r[5].split(" / "))
        assert steps >= clean > 0 and r[6] == f"{steps / clean - 1:+.1%}"


def test_loop_stop(store, tmp_path):
    table = rows(bench("loop_stop.py", store, tmp_path))
    assert [(r[0], r[2]) for r in table] == [("looper", "48")]
    full, stop, clean = map(int, table[0][7].split(" / "))
    assert full >= stop >= clean > 0  # stopping never decodes more than full length, nor less than clean


def test_loop_stop_fp(store, tmp_path):
    text = bench("loop_stop_fp.py", store, tmp_path)
    assert "| tables | qwen2.5-vl-3b | 160 |" in text and "| 48 | " in text


def test_loop_stop_tradeoff(store, tmp_path):
    text = bench("loop_stop_tradeoff.py", store, tmp_path)
    assert "min_copies 56" in text and "tail test alone" in text
    assert (tmp_path / "loop_stop_tradeoff.py.png").is_file() or (tmp_path / "loop_stop_tradeoff.png").is_file()


def test_vllm_check(store, tmp_path):
    pytest.importorskip("vllm", reason="vLLM is not installed here: benchmarks/vllm_check.py needs a vLLM venv")
    text = bench("vllm_check.py", store, tmp_path)
    assert "FAILED" not in text
