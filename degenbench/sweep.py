"""Sweeps that say where they are: only the jobs that can differ, every job checked before any
folder is made, "job k of N", and a summary table when a multirun ends.

A stage reads only some config groups (vanilla never reads `dpo`, the reference systems never read
`family`), so a grid such as the toy's (families x stages x betas: 60 points) holds jobs that would
only find another job's runs complete. `distinct` keeps the first of each such group: the toy runs
26 jobs (5 vanilla, 5 SFT, 15 DPO, 1 reference). The sweeper (hydra_plugins/degenbench_sweeper,
`hydra/sweeper=distinct`, the default) calls it; `hydra/sweeper=basic` runs every grid point.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from degenbench.analysis.runs import RUNS_FILE  # each job's record of its run folders (the summary's input)

log = logging.getLogger(__name__)
JOBS_ENV = "DEGENBENCH_SWEEP_JOBS"  # the number of jobs of the running sweep, for "job k of N"
# The config groups a stage never reads: jobs that differ only there do the same work.
NOT_READ = {
    "vanilla": ("sft", "sampling", "judge", "pairs", "dpo", "reference", "accelerate"),
    "sft": ("sampling", "judge", "pairs", "dpo", "reference"),
    "dpo": ("reference",),
    "reference": ("family", "sft", "sampling", "judge", "pairs", "dpo", "generation", "mitigation", "accelerate",
                  "checkpoint"),
}
NEVER_READ = ("hydra", "run_name", "logger")  # where a job logs, never what it computes


class ConfigError(ValueError):
    """A setting no job can run with: one line naming the key and the fix."""


def identity(cfg: DictConfig) -> str:
    """What a job computes: its config without the groups its stage never reads."""
    c = OmegaConf.to_container(cfg, resolve=False)
    for key in (*NEVER_READ, *NOT_READ.get(cfg.stage, ())):
        c.pop(key, None)
    return json.dumps(c, sort_keys=True, default=str)


def check(cfg: DictConfig) -> None:
    """Everything a job can be refused for without loading a document: ranges and choices
    (config.validate), the evaluation sets' names and budgets (evalsets.check), and the `_target_`
    of each extension point the stage reads: the data source, the judge, the reference systems."""
    from degenbench.models import reference_systems
    from degenbench.config import validate
    from degenbench.documents.evalsets import check as check_sets
    from degenbench.documents.sources import check as check_source
    from degenbench.stages.judge import check as check_judge

    validate(cfg)
    if not applies(cfg):
        raise ValueError(f"mitigation={cfg.mitigation.name} applies to stage {', '.join(cfg.mitigation.stages)} only "
                         f"(this job is stage={cfg.stage})")
    check_source(cfg.data)
    check_sets(cfg)
    unread = NOT_READ.get(cfg.stage, ())
    if "judge" not in unread:
        check_judge(cfg.judge)
    if "reference" not in unread:
        reference_systems.check(cfg)


def applies(cfg: DictConfig) -> bool:
    """Whether the job's mitigation applies to its stage (mitigation.stages; best-of-N by DPO's
    implicit reward needs a DPO model). The reference systems read no mitigation."""
    stages = (cfg.get("mitigation") or {}).get("stages")
    return cfg.stage == "reference" or not stages or cfg.stage in stages


def one_line(error: BaseException) -> str:
    """An error as one line: Hydra's and OmegaConf's messages span several ("Could not override
    'dpo.betta'.\nTo append to your config use +dpo.betta=0.1\nKey 'betta' is not in struct ...")."""
    text = str(error)
    hydras = type(error).__module__.startswith(("hydra", "omegaconf"))  # whose cause says what went wrong
    if hydras and error.__cause__ is not None and str(error.__cause__) not in text:
        text += "\n" + str(error.__cause__)
    text = text.split("Config search path:")[0]  # Hydra's list of where it looked
    out, listing = [], False
    for line in (ln.strip() for ln in text.splitlines()):
        if not line or line.startswith("object_type="):
            continue
        if listing:  # the options Hydra lists under "Available options in 'family':"
            if line.startswith("_"):  # shared defaults (conf/family/_base.yaml ...), not options
                continue
            out[-1] += (" " if out[-1].endswith(":") else ", ") + line
            continue
        out.append(line.rstrip("."))
        listing = line.endswith(":")
    return "; ".join(dict.fromkeys(out))  # in order, each once


def distinct(jobs: list[list[str]], compose) -> tuple[list[list[str]], list[tuple[list[str], list[str]]]]:
    """(the jobs that can differ, family by family in turn (`interleave`); (dropped job, the kept
    job it repeats) pairs). `compose` gives a job's config from its overrides. Every job is
    checked first: a ConfigError names the first job no config can run."""
    kept, dropped, first, groups = [], [], {}, []
    for overrides in jobs:
        try:
            cfg = compose(overrides)
            if not applies(cfg):  # a grid point such as SFT x best-of-N: nothing to run
                dropped.append((overrides, [f"(mitigation {cfg.mitigation.name}: stage {', '.join(cfg.mitigation.stages)} only)"]))
                continue
            check(cfg)
        except Exception as e:  # Hydra, OmegaConf and degenbench's own config errors
            raise ConfigError(f"{one_line(e)} (job {' '.join(overrides)})") from e
        ident = identity(cfg)
        if ident in first:
            dropped.append((overrides, first[ident]))
        else:
            first[ident] = overrides
            kept.append(overrides)
            groups.append("" if cfg.stage == "reference" else cfg.family.name)
    return interleave(kept, groups), dropped


def interleave(jobs: list, groups: list[str]) -> list:
    """The jobs taken family by family in turn (each family's first job, then each one's second,
    ...), each family's own in order: jobs that run side by side (hydra/launcher=parallel) are
    then other families' and seldom wait for the model another job is still training."""
    by_group: dict[str, list] = {}
    for job, group in zip(jobs, groups):
        by_group.setdefault(group, []).append(job)
    rounds = max((len(v) for v in by_group.values()), default=0)
    return [v[k] for k in range(rounds) for v in by_group.values() if k < len(v)]


def job_started(cfg: DictConfig) -> None:
    """Log "job k of N" in a sweep (N from the sweeper, k from Hydra's job number)."""
    from hydra.core.hydra_config import HydraConfig

    total = os.environ.get(JOBS_ENV)
    if total and HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        what = cfg.stage if cfg.stage == "reference" else " ".join(
            [cfg.family.name, cfg.stage, *([f"beta {cfg.dpo.beta:g}"] if cfg.stage == "dpo" else []),
             *([f"mitigation {cfg.mitigation.name}"] if cfg.mitigation.get("name", "none") != "none" else [])])
        log.info("job %d of %s: %s", HydraConfig.get().job.num + 1, total, what)


def record_job(run_dirs: list[Path]) -> None:
    """The run folders a job wrote, in its Hydra output folder (read by Summary at the end)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        out = Path(HydraConfig.get().runtime.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / RUNS_FILE).write_text(json.dumps([str(d) for d in run_dirs]))


def release_memory() -> None:
    """Hand the heap a finished job freed back to the OS. A launcher's worker runs job after job
    (hydra/launcher=parallel), and loky restarts a worker whose memory grew 300 MB past what its
    first job left, which costs the next job 7-10 s of imports; glibc keeps freed memory otherwise
    (an SFT job: +190 MB after, 40 MB under the start once trimmed)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to hand back this way
        pass


def summary(sweep_dir: str | Path) -> pd.DataFrame:
    """family x stage (x beta, eval set): documents, degeneration with its Wilson interval, CER, of
    every run the sweep's jobs wrote."""
    from degenbench.analysis.runs import load_runs

    dirs = sorted({Path(d) for f in Path(sweep_dir).glob(f"*/{RUNS_FILE}") for d in json.loads(f.read_text())})
    runs = load_runs(dirs) if dirs else pd.DataFrame()
    if runs.empty:
        return runs
    runs["degeneration (95% CI)"] = [f"{100 * r:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" for r, lo, hi
                                     in zip(runs.degeneration_rate, runs.deg_ci95_lo, runs.deg_ci95_hi)]
    runs["beta"] = [f"{b:g}" if pd.notna(b) else "" for b in runs.beta]
    cols = ["family", "stage", "mitigation", "beta", "seed", "eval_set", "n_docs", "degeneration (95% CI)", "cer",
            "cer_not_degenerate"]
    return runs[cols].reset_index(drop=True)


class Summary(Callback):
    """Hydra callback (hydra.callbacks.summary): at the end of a multirun, the summary table of
    its runs, printed and written beside the jobs' folders as summary.md and summary.csv."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = summary(sweep_dir)
        if table.empty:
            return
        table.to_csv(sweep_dir / "summary.csv", index=False)
        md = table.to_markdown(index=False, floatfmt=".4g")
        (sweep_dir / "summary.md").write_text(md + "\n")
        log.info("summary of the sweep's %d runs (also in %s):\n%s", len(table), sweep_dir / "summary.md", md)
