"""The runs as one tidy DataFrame, from the local results store or from W&B, with one schema.

Both loaders map a run's (config, summary) through the same `row()`: locally the pair is the run
folder's config.yaml and metrics.json; on W&B it is the evaluation run's config and summary, which
`degenbench.tracking.wandb_log.log_run` wrote from those very files.

    load_runs("outputs/runs")                                   # local store (offline W&B runs too)
    load_wandb("my-entity/degenbench", {"tags": "toy"})         # online project (wandb.Api)

W&B's offline runs hold what the run folders hold: read the folders (or `wandb sync` them and use
the API); W&B's private transaction-log format is not read here.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf

from degenbench.config import REFERENCE, STAGES
from degenbench.documents import teacher
from degenbench.stages.naming import PIPELINE_OBJECTIVES
from degenbench.stages.store import COMPLETE

log = logging.getLogger(__name__)
HELDOUT, VALIDATION = "heldout", "validation"  # the training source's held-out split; the split beta is chosen on
RUNS_FILE = "runs.json"  # in each sweep job's Hydra output folder: the run folders it wrote (sweep.record_job)
EVAL_JOB_TYPES = [*STAGES, REFERENCE]  # W&B job types of evaluation runs (training runs: sft-train, dpo-train)

# The schema: column -> meaning. Every loader returns exactly these columns, in this order.
COLUMNS = {
    "family": "model family (conf/family), or the reference system (stage reference)",
    "size": "tiny stand-in or real (\"-\" for a reference system)",
    "eval_set": "documents evaluated: heldout (the training source's held-out split), validation (carved "
                "from the training side, never trained on; beta is chosen here) or a named external set",
    "stage": "vanilla, sft, dpo, or reference (no model: degenbench/models/reference_systems.py)",
    "mitigation": "decode-time mitigation of the evaluation (conf/mitigation; none, or \"-\" for a reference system)",
    "training": "how the model was trained where a stage has options: DPO's objective (conf/dpo: sigmoid, "
                "sigmoid+sft, ipo, kto, unlikelihood, ...), rejected answers other than loops, `from base` (no "
                "SFT); \"untrained\" for an SFT stage skipped (sft.method=none); empty otherwise",
    "beta": "DPO beta (NaN for vanilla and SFT)", "seed": "job seed",
    "n_docs": "documents of its eval set evaluated",
    "max_new_tokens": "generation token limit (NA for a reference system)",
    "n_degenerate": "documents whose output is degenerate (the paper's rule)",
    "degeneration_rate": "n_degenerate / n_docs", "deg_ci95_lo": "Wilson 95% lower bound",
    "deg_ci95_hi": "Wilson 95% upper bound", "cer": "mean character error rate (exceeds 1 on loops)",
    "cer_not_degenerate": "mean CER over the documents whose output is not degenerate",
    "n_repetitive": "documents whose truth legitimately repeats (per-document flag `repetitive`)",
    "cer_repetitive": "mean CER over those documents", "cer_ordinary": "mean CER over the other documents",
    "ned": "mean normalised edit distance", "score": "mean (Levenshtein ratio + BLEU-4) / 2",
    "json_valid_rate": "share of outputs that parse as the JSON answer",
    "hit_limit_rate": "share of outputs that ran to the token limit",
    "n_loop_stopped": "outputs cut by loop-aware stopping (generation.loop_stop; counted degenerate)",
    "new_tokens": "tokens generated in all", "new_tokens_degenerate": "tokens generated on degenerate outputs",
    "generate_seconds": "generation wall clock (each row: its equal share of its batch)",
    "generate_seconds_degenerate": "generation seconds of degenerate outputs (same attribution)",
    "n_retried": "documents generated more than once (a mitigation's retries)",
    "new_tokens_all": "tokens generated in all, every attempt counted",
    "generate_seconds_all": "generation seconds, every attempt counted",
    "dpo_skipped": "DPO had no pairs; the SFT model was evaluated (dpo.on_no_pairs=sft)",
    "teacher_loops": "share of the loopable training pages whose SFT label was a teacher's loop "
                     "(data.teacher_loops; 0 for vanilla and without the option, NA for a reference system)",
    "run_id": "degenbench run id", "wandb_run_id": "W&B run id (None when logging was disabled)",
    "source": "local or wandb", "run_dir": "local run folder (None from W&B)",
}


def _get(d: Mapping, dotted: str, default=None):
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return default
        d = d[part]
    return d


def _teacher_share(config: Mapping, stage: str) -> float | None:
    """The run's teacher-loop share: what its SFT labels held (the base saw none)."""
    if stage == REFERENCE:
        return None
    if stage not in ("sft", "dpo"):
        return 0.0
    return teacher.share_for(_get(config, "data.teacher_loops"), _get(config, "family.name"))


def _old_training(config: Mapping) -> str:
    """The training label of a DPO run made before runs recorded one: its loss types."""
    return "+".join(_get(config, "dpo.trainer.loss_type") or ["sigmoid"])


def row(config: Mapping, summary: Mapping, *, source: str, run_dir: str | None = None,
        wandb_run_id: str | None = None) -> dict:
    """One run's schema row from its resolved config and its evaluation summary."""
    s = summary
    lo, hi = s.get("degeneration_ci95") or (s.get("degeneration_ci95_low"), s.get("degeneration_ci95_high"))
    stage = s.get("stage", _get(config, "stage"))
    return {
        "family": s.get("family", _get(config, "family.name")), "size": s.get("size", _get(config, "family.size")),
        "eval_set": s.get("eval_set") or HELDOUT,  # runs made before eval sets were named: the held-out split
        "stage": stage, "mitigation": s.get("mitigation") or ("-" if stage == REFERENCE else "none"),
        "training": s.get("training") or (_old_training(config) if stage == "dpo" else ""),
        "beta": s.get("beta") if stage == "dpo" else None,
        "seed": s.get("seed", _get(config, "seed")), "n_docs": s["n_docs"],
        "max_new_tokens": None if stage == REFERENCE else _get(config, "generation.max_new_tokens"),
        "n_degenerate": s["n_degenerate"], "degeneration_rate": s["degeneration_rate"],
        "deg_ci95_lo": lo, "deg_ci95_hi": hi, "cer": s["cer"], "ned": s["ned"], "score": s["score"],
        "cer_not_degenerate": s.get("cer_not_degenerate"), "n_repetitive": s.get("n_repetitive", 0),
        "cer_repetitive": s.get("cer_repetitive"), "cer_ordinary": s.get("cer_ordinary", s["cer"]),
        "json_valid_rate": s["json_valid_rate"], "hit_limit_rate": s.get("hit_limit_rate"),
        "n_loop_stopped": s.get("n_loop_stopped", 0),
        "new_tokens": s.get("new_tokens"), "new_tokens_degenerate": s.get("new_tokens_degenerate"),
        "generate_seconds": s.get("generate_seconds"),
        "generate_seconds_degenerate": s.get("generate_seconds_degenerate"),
        "n_retried": s.get("n_retried", 0), "new_tokens_all": s.get("new_tokens_all", s.get("new_tokens")),
        "generate_seconds_all": s.get("generate_seconds_all", s.get("generate_seconds")),
        "dpo_skipped": bool(s.get("dpo_skipped")), "teacher_loops": _teacher_share(config, stage),
        "run_id": s["run_id"],
        "wandb_run_id": wandb_run_id or s.get("wandb_run_id"), "source": source, "run_dir": run_dir,
    }


def pipeline_training(runs: pd.DataFrame) -> pd.Series:
    """The runs of the pipeline's own training: vanilla, a trained SFT model, reference systems, and
    DPO under the first of the pipeline's objectives present (sigmoid+sft, the toy's; sigmoid, the
    paper's), from SFT, with loops rejected; else the store's most common DPO training."""
    training = runs.training.fillna("")
    dpo = runs.stage == "dpo"
    labels = training[dpo]
    main = next((o for o in reversed(PIPELINE_OBJECTIVES) if (labels == o).any()),
                labels.mode().iloc[0] if len(labels) else "")
    return (~dpo & (training == "")) | (dpo & (training == main))


def sort_key(col: pd.Series) -> pd.Series:
    """Sort key of one column: reference, then the stages in pipeline order; heldout first and
    validation last among eval sets; seeds numerically with "pooled" (and missing) after them."""
    if col.name == "stage":
        return col.map({REFERENCE: -1, **{s: i for i, s in enumerate(STAGES)}})
    if col.name == "eval_set":
        return col.map(lambda e: f"{0 if e == HELDOUT else 2 if e == VALIDATION else 1}{e}")
    if col.name == "seed":
        return pd.to_numeric(col.astype(object), errors="coerce").astype(float).fillna(float("inf"))
    return col


def ordered(df: pd.DataFrame, by=("family", "size", "eval_set", "stage", "beta", "seed")) -> pd.DataFrame:
    """`df` sorted by `by` (stage, eval set and seed in their natural order; NaN beta first)."""
    return df.sort_values(list(by), key=sort_key, na_position="first", kind="stable").reset_index(drop=True)


def frame(rows: list[dict], where: str) -> pd.DataFrame:
    """Rows as the schema's DataFrame, ordered family, size, eval set, stage (vanilla, sft, dpo),
    beta, seed."""
    if not rows:
        raise FileNotFoundError(f"no finished evaluation runs in {where}: run `degenbench experiment=toy` "
                                "first, or point the loader at another store")
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    text = {"family", "size", "eval_set", "stage", "mitigation", "training", "dpo_skipped", "run_id", "wandb_run_id", "source", "run_dir"}
    counts = {"seed", "n_docs", "max_new_tokens", "n_degenerate", "n_loop_stopped", "new_tokens",
              "new_tokens_degenerate", "n_repetitive", "n_retried", "new_tokens_all"}
    df = df.astype({c: "Int64" if c in counts else float  # a missing value is NA, never None
                    for c in COLUMNS if c not in text})
    return ordered(df)


def _skip_record(d: Path) -> dict | None:
    """A reference system's skip record (stages/reference.py): metrics.json with `skipped_system`."""
    f = d / "metrics.json"
    if (d / COMPLETE).is_file() or not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text())
    except (OSError, ValueError):
        return None  # an unfinished run's half-written record: counted as unfinished
    return rec if isinstance(rec, dict) and rec.get("skipped_system") else None


def run_dirs(runs_dir: str | Path | list[Path]) -> list[Path]:
    """Finished run folders (a completion marker and metrics.json) of a folder of runs, or of a
    list of run folders; unfinished ones are counted, reference systems that could not run are
    named (`skipped_systems`)."""
    if isinstance(runs_dir, (list, tuple)):
        dirs, runs_dir = sorted(Path(d) for d in runs_dir), f"{len(runs_dir)} run folders"
    else:
        runs_dir = Path(runs_dir)
        if not runs_dir.is_dir():
            raise FileNotFoundError(f"{runs_dir} is not a folder of runs: run `degenbench experiment=toy` first")
        dirs = sorted(d for d in runs_dir.iterdir() if d.is_dir())
    done = [d for d in dirs if (d / COMPLETE).is_file() and (d / "metrics.json").is_file()]
    skips = {d for d in dirs if d not in done and _skip_record(d)}
    if skips:
        log.warning("%d reference runs were skipped (the system could not run there) and have no rows: %s",
                    len(skips), "; ".join(f"{d.name}: {_skip_record(d)['why']}" for d in sorted(skips)))
    dirs = [d for d in dirs if d not in skips]
    if len(done) < len(dirs):
        log.warning("%d of %d run folders in %s are unfinished and left out: %s", len(dirs) - len(done),
                    len(dirs), runs_dir, ", ".join(d.name for d in dirs if d not in done))
    return done


def load_runs(runs_dir: str | Path | list[Path] = "outputs/runs") -> pd.DataFrame:
    """The local store (a folder of runs, or a list of run folders): one row per finished run
    folder. A folder whose config.yaml or metrics.json cannot be read (truncated, hand-edited) is
    left out, named and counted in `.attrs["unreadable"]` (the report lists them), instead of
    ending the report."""
    rows, unreadable = [], []
    for d in run_dirs(runs_dir):
        try:
            config = OmegaConf.to_container(OmegaConf.load(d / "config.yaml"))
            metrics = json.loads((d / "metrics.json").read_text())
            if not isinstance(config, dict) or not isinstance(metrics, dict):
                raise ValueError("not a mapping")
        except (OSError, ValueError, yaml.YAMLError) as e:
            unreadable.append({"run": d.name, "why": f"{type(e).__name__}: {e}".splitlines()[0]})
            log.warning("left out: the run record in %s cannot be read (%s); rerun its job to rewrite it, or "
                        "delete the folder", d, unreadable[-1]["why"])
            continue
        rows.append(row(config, metrics, source="local", run_dir=str(d)))
    df = frame(rows, str(runs_dir))
    df.attrs["unreadable"] = unreadable
    return df


def skipped_systems(runs_dir: str | Path, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The reference systems skipped in the store (e.g. Tesseract not installed), one row per
    (system, eval set, seed): why, and the skip record's run folder. With `runs`, a skip that a
    finished run of the same system, eval set and seed has since replaced is left out."""
    recs = [r | {"run_dir": str(d)} for d in sorted(Path(runs_dir).iterdir()) if d.is_dir()
            for r in [_skip_record(d)] if r]
    cols = ["system", "eval_set", "seed", "why", "run_dir"]
    out = pd.DataFrame([{"system": r["skipped_system"], "eval_set": r.get("eval_set"), "seed": r.get("seed"),
                         "why": r.get("why"), "run_dir": r["run_dir"]} for r in recs], columns=cols)
    if runs is not None and len(out):
        done = set(zip(runs.family, runs.eval_set, runs.seed.astype(object)))
        out = out[[k not in done for k in zip(out.system, out.eval_set, out.seed)]]
    return out.drop_duplicates(["system", "eval_set", "seed"]).reset_index(drop=True)


def load_wandb(path: str, filters: dict | None = None, api=None) -> pd.DataFrame:
    """An online W&B project ("entity/project"): its evaluation runs (job type vanilla, sft, dpo
    or reference) matching `filters` (W&B's MongoDB-style run filters, e.g. {"tags": "toy"} or
    {"group": "gemma-3-4b"}). Needs `wandb login` (or WANDB_API_KEY) and network."""
    import wandb

    api = api or wandb.Api()
    query = {"$and": [{"jobType": {"$in": EVAL_JOB_TYPES}}, *([filters] if filters else [])]}
    rows = [row(dict(r.config), dict(r.summary), source="wandb", wandb_run_id=r.id)
            for r in api.runs(path, filters=query)]
    return frame(rows, f"W&B project {path} (filters {filters})")


def load_predictions(runs: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The per-document rows of the local runs in `runs` (one row per run and document); the
    generated token ids are left out unless asked for."""
    frames = []
    for d in runs.run_dir.dropna():
        df = pd.read_parquet(Path(d) / "predictions.parquet", columns=columns)
        frames.append(df.drop(columns=["token_ids"], errors="ignore") if columns is None else df)
    if not frames:
        raise FileNotFoundError("no local run folders in this runs table (W&B rows carry no per-document "
                                "predictions here): load them with load_runs(<runs dir>)")
    return pd.concat(frames, ignore_index=True)


def load_training(runs: pd.DataFrame) -> pd.DataFrame:
    """Training curves behind each local run (its training.json log history), one row per logged
    step: run_id, family, size, eval_set, seed, stage, beta, trained ("sft" or "dpo"), step and the
    logged values. A model evaluated on several eval sets has the same history under each."""
    rows = []
    for r in runs.itertuples():
        f = Path(r.run_dir) / "training.json" if isinstance(r.run_dir, str) else None
        if f is None or not f.is_file():
            continue
        rec = json.loads(f.read_text())
        for h in rec.get("log_history", []):
            if "loss" in h:  # a logged training step (the last entry is the run's total)
                rows.append({"run_id": r.run_id, "family": r.family, "size": r.size,
                             "eval_set": r.eval_set, "seed": r.seed, "stage": r.stage, "beta": r.beta,
                             "trained": rec.get("kind"), **h})
    return pd.DataFrame(rows)
