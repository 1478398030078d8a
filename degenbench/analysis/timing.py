"""Where a sweep's time went, read from its own logs: every job of a Hydra multirun writes a
timestamped log (`<sweep dir>/<k>_<job name>/*.log`), and the lines that open each piece of work
(`job k of N`, `BUILD sft ...`, `run <id>: ... of <set>`, the line that writes a run) split each
job's wall clock into activities. Nothing is re-measured: the table is the sweep as it ran.

    python -m degenbench.analysis.timing outputs/hydra/multirun_<date> --out results/toy/timing.md
"""
from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

import pandas as pd

LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[([^\]]+)\]\[\w+\] - (.*)$")
JOB = re.compile(r"job \d+ of \d+: (\S+)(?: (\w+))?")  # "<family> <stage> ...", or "reference"
BUILDS = {"sft": "SFT training", "candidates": "candidate sampling", "pairs": "pairs",
          "dpo": "DPO training", "merged": "merging LoRA"}


def activity(logger: str, message: str) -> str | None:
    """The activity a log line opens, or None (the line belongs to the activity before it)."""
    if JOB.match(message):
        return "job start"  # from this line to the job's first piece of work: composing, checks
    if m := re.match(r"BUILD (\w+) ", message):
        return BUILDS.get(m.group(1), f"build {m.group(1)}")
    if m := re.match(r"run \S+: .* of (\S+)$", message):
        return "reference systems" if logger.endswith("reference") else f"evaluation {m.group(1)}"
    if " -> " in message and logger.endswith("runfiles"):
        return "writing runs"  # metrics, tables, W&B: until the next piece of work
    return None


def job_log(job_dir: Path) -> Path | None:
    logs = sorted(job_dir.glob("*.log"))
    return logs[0] if logs else None


def segments(sweep_dir: Path) -> pd.DataFrame:
    """One row per (job, activity) piece: family, stage, activity, seconds. A piece runs from its
    opening line to the next opening line; a job's last piece runs to when the job recorded its
    runs (runs.RUNS_FILE, its last act), else to its last line, and on to the next job's first
    line if that came later (what happens between jobs belongs to the job that ends). Jobs that
    ran side by side (hydra/launcher=parallel) each keep their own time."""
    from degenbench.analysis.runs import RUNS_FILE

    rows, jobs = [], sorted((d for d in Path(sweep_dir).iterdir() if d.is_dir() and d.name.split("_")[0].isdigit()),
                            key=lambda d: int(d.name.split("_")[0]))
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir}: no job folders (<k>_<name>/) of a Hydra multirun; pass the sweep's "
                                f"folder, e.g. outputs/hydra/multirun_<date>")
    for d in jobs:
        log = job_log(d)
        if log is None:
            continue
        family, stage = d.name.split("_", 1)[1], "?"
        for line in log.read_text(errors="replace").splitlines():
            m = LINE.match(line)
            if not m:
                continue
            when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
            if j := JOB.match(m.group(3)):
                family, stage = (j.group(1), j.group(2)) if j.group(2) else ("reference", j.group(1))
            if rows and rows[-1]["job"] == d.name:
                rows[-1]["end"] = when  # the open piece runs at least to here
            if what := activity(m.group(2), m.group(3)):
                rows.append({"job": d.name, "family": family, "stage": stage, "activity": what,
                             "start": when, "end": when})
        if rows and rows[-1]["job"] == d.name and (d / RUNS_FILE).exists():
            rows[-1]["end"] = max(rows[-1]["end"], datetime.fromtimestamp((d / RUNS_FILE).stat().st_mtime))
    for last, nxt in zip(rows, rows[1:]):  # a job's last piece, then the next job's first
        if nxt["job"] != last["job"]:
            last["end"] = max(last["end"], nxt["start"])
    table = pd.DataFrame(rows)
    table["seconds"] = (table.end - table.start).dt.total_seconds()
    return table


def breakdown(table: pd.DataFrame) -> pd.DataFrame:
    """Seconds per family (rows, then `all`) and activity (columns, then `total`)."""
    wide = table.pivot_table(index="family", columns="activity", values="seconds", aggfunc="sum", fill_value=0.0)
    wide.loc["all"] = wide.sum()
    wide["total"] = wide.sum(axis=1)
    return wide.round(1)


def main(argv: list[str] | None = None) -> None:
    from degenbench import io

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", help="a Hydra multirun folder (outputs/hydra/multirun_<date>)")
    p.add_argument("--out", help="also write the table here (Markdown)")
    a = p.parse_args(argv)
    table = segments(Path(a.sweep_dir))
    wall = (table.end.max() - table.start.min()).total_seconds()
    text = (f"Where the time went: {a.sweep_dir}, {table.job.nunique()} jobs, {wall:.0f} s from the first log "
            f"line to the last; {table.seconds.sum():.0f} s of jobs' time (more than the wall time where jobs ran "
            f"side by side) in seconds per family and activity\n\n{breakdown(table).to_markdown()}\n")
    print(text)
    if a.out:
        io.write_text(a.out, text)


if __name__ == "__main__":
    main()
