"""Interrupting a sweep and rerunning it finishes without redoing finished stages."""
import os
import signal
import subprocess
import sys
import time

from test_stages import TINY


def sweep(results, **kw):
    cmd = [sys.executable, "-m", "degenbench", "-m", "stage=sft,dpo", "dpo.beta=0.1,0.5",
           f"paths.results_dir={results}", *TINY]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


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
    assert sorted(p.name.split("-tiny-")[1].rsplit("-", 1)[0] for p in runs) == ["dpo-b0.1", "dpo-b0.5", "sft"]
