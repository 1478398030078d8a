"""Interrupting a sweep and rerunning it finishes without redoing finished stages."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import TINY


def sweep(results, **kw):
    cmd = [sys.executable, "-m", "degenbench", "-m", "stage=sft,dpo", "dpo.beta=0.1,0.5",
           f"paths.results_dir={results}", *TINY]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


@pytest.mark.slow  # minutes on 2 cores: .ci/run runs it with the slow tests
def test_kill_during_sweep_then_rerun_reuses_finished_stages(tmp_path):
    proc = sweep(tmp_path)
    pairs = tmp_path / "artifacts" / "pairs"
    deadline = time.time() + 300
    while not list(pairs.glob("*/_COMPLETE.json")):  # SFT, candidates and pairs are done ...
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # ... and DPO has started: kill it all, no cleanup
    proc.wait()
    assert not list((tmp_path / "artifacts" / "dpo").glob("*/_COMPLETE.json"))

    out = sweep(tmp_path).communicate()[0]
    builds = [line.split(" - ")[-1].split()[1] for line in out.splitlines() if " - BUILD " in line]
    assert sorted(builds) == ["dpo", "dpo"], out[-3000:]  # only what was not finished
    runs = [p for p in (tmp_path / "runs").iterdir() if (p / "_COMPLETE.json").is_file()]
    assert sorted(p.name.split("-tiny-")[1].rsplit("-", 2)[0] for p in runs) == ["dpo-b0.1", "dpo-b0.5", "sft"]


# SFT and DPO save a checkpoint every step; sampling and evaluation batches are small: every stage
# runs long enough to be killed in its middle
KILLABLE = ["stage=dpo", "dpo.beta=0.1", "sft.trainer.max_steps=8", "dpo.trainer.max_steps=4", "checkpoint.save_steps=1",
            "sampling.batch_size=2", "generation.batch_size=1"]
STAGE_MIDDLES = [  # (stage, a file there only while the stage is part done, the stage's own done-marker)
    ("sft", "artifacts/sft/.*.partial/trainer/checkpoint-*/trainer_state.json", "artifacts/sft/*/_COMPLETE.json"),
    ("sampling", "artifacts/candidates/.*.partial/shards/*.parquet", "artifacts/candidates/*/_COMPLETE.json"),
    ("dpo", "artifacts/dpo/.*.partial/trainer/checkpoint-*/trainer_state.json", "artifacts/dpo/*/_COMPLETE.json"),
    ("evaluation", "runs/*/shards/*.parquet", "runs/*/_COMPLETE.json"),
]


def job(results, log_file):
    cmd = [sys.executable, "-m", "degenbench", f"paths.results_dir={results}", *TINY, *KILLABLE]
    return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow  # about 4 minutes: run by .ci/run after the default suite
def test_kill_9_in_each_stage_then_rerun_resumes_and_matches_an_unbroken_run(tmp_path):
    import json

    import pandas as pd
    import torch
    from safetensors.torch import load_file

    unbroken, killed = tmp_path / "unbroken", tmp_path / "killed"
    with open(tmp_path / "unbroken.log", "w") as f:
        assert job(unbroken, f).wait() == 0, (tmp_path / "unbroken.log").read_text()[-3000:]
    for n, (stage, middle, done) in enumerate(STAGE_MIDDLES):
        log_path = tmp_path / f"attempt-{n}.log"
        with open(log_path, "w") as f:
            proc, deadline = job(killed, f), time.time() + 300
            while not list(killed.glob(middle)):
                assert proc.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)  # kill -9, mid-stage: no cleanup runs
            proc.wait()
        assert not list(killed.glob(done)), f"{stage} finished before the kill landed"
        if n:  # this attempt picked up what the previous one left
            text = log_path.read_text()
            assert "RESUME" in text or "resuming" in text, text[-3000:]
    with open(tmp_path / "final.log", "w") as f:
        assert job(killed, f).wait() == 0, (tmp_path / "final.log").read_text()[-3000:]
    final = (tmp_path / "final.log").read_text()
    assert "evaluation: resuming after" in final, final[-3000:]

    # nothing half-made is left, and every resumable artifact says it was resumed
    assert not list(killed.rglob("*.partial")) and not list(killed.rglob("shards"))
    for kind in ("sft", "candidates", "dpo"):
        (marker,) = killed.glob(f"artifacts/{kind}/*/_COMPLETE.json")
        assert json.loads(marker.read_text())["resumed"] is True, kind
    # the same results as the unbroken run: weights, candidates, predictions and metrics
    for kind in ("sft", "dpo"):
        a, b = (load_file(next(r.glob(f"artifacts/{kind}/*/model/model.safetensors"))) for r in (unbroken, killed))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{kind} weight {k}")
    cand = [pd.read_parquet(next(r.glob("artifacts/candidates/*/candidates.parquet"))) for r in (unbroken, killed)]
    pd.testing.assert_frame_equal(*cand)
    pred = [pd.read_parquet(next(r.glob("runs/*/predictions.parquet"))) for r in (unbroken, killed)]
    for p in pred:  # wall-clock seconds differ between runs; everything else must not
        p.drop(columns=["seconds", "seconds_all"], inplace=True)
        p["attempt_outputs"] = p.attempt_outputs.map(lambda a: [{k: v for k, v in x.items() if k != "seconds"} for x in a])
    pd.testing.assert_frame_equal(*pred)
    metrics = [json.loads(next(r.glob("runs/*/metrics.json")).read_text()) for r in (unbroken, killed)]
    for key in ("degeneration_rate", "cer", "ned", "score", "json_valid_rate", "n_docs", "n_degenerate"):
        assert metrics[0][key] == pytest.approx(metrics[1][key]), key
