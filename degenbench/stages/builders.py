"""How each artifact of the stage graph (stages/graph.py) is built, and what is checked once it
is there, built or reused: no evaluated page in what trains, and the facts a run records about the
model it evaluates (which training pages carried a teacher loop, the pairs behind DPO)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pandas as pd
from omegaconf import DictConfig

from degenbench.documents import Document
from degenbench.decoding.generate import release
from degenbench.models.families import load_processor
from degenbench.stages import evaluate, launch
from degenbench.stages.judge import judge_candidates
from degenbench.stages.pairs import DATASET, STATS, build_pairs
from degenbench.stages.sample import CANDIDATES, sample_candidates
from degenbench.stages.store import artifact_dir, is_complete, recorded
from degenbench.stages.training import MODEL_DIR

log = logging.getLogger(__name__)


@dataclass
class Job:
    """What one job's builds share."""
    cfg: DictConfig
    keys: object  # stages.graph.Keys
    train: list[Document]  # the training split
    guard: Callable[[list[str], str], None]  # fails if any evaluated page is among these ids
    made: dict  # kept in every artifact this job builds (provenance)
    note: dict = field(default_factory=dict)  # kept in each of the job's runs (metrics.json)
    dirs: dict[str, Path | None] = field(default_factory=dict)  # kind -> its folder (None: not a folder)


# builders: (job, work folder) -> facts for the completion record

def train_sft(job: Job, tmp: Path) -> dict:
    return launch.train(job.cfg, "sft", tmp)


def sample(job: Job, tmp: Path) -> dict:
    cfg = job.cfg
    model, processor = evaluate.generation_model(cfg, job.dirs["sft"] / MODEL_DIR, cfg.sampling, [cfg.sampling])
    try:
        return sample_candidates(cfg, model, processor, job.train, tmp)
    finally:
        release(model)  # the engine's memory goes before DPO trains


def judge_and_pair(job: Job, tmp: Path) -> dict:
    by_id = {d.id: d for d in job.train}
    cands = pd.read_parquet(job.dirs["candidates"] / CANDIDATES)
    return build_pairs(job.cfg, by_id, judge_candidates(job.cfg, by_id, cands), tmp, load_processor(job.cfg.family))


def train_dpo(job: Job, tmp: Path) -> dict:
    return launch.train(job.cfg, "dpo", tmp, sft_dir=job.dirs["sft"], pairs_dir=job.dirs["pairs"])


# checks: (job, the artifact's folder), once it is there

def has_training_pages(job: Job, _) -> None:  # the pages: what trains on them needs some
    if not job.train:
        raise ValueError(f"stage={job.cfg.stage} needs training documents, but data.heldout="
                         f"{job.cfg.data.heldout} holds out all of them")


def sft_checked(job: Job, sft_dir: Path) -> None:
    job.guard(recorded(sft_dir)["doc_ids"], f"the SFT data of {sft_dir}")
    if loops := recorded(sft_dir).get("teacher_loops"):  # which training pages carried a teacher loop
        job.note["teacher_loops"] = {k: v for k, v in loops.items() if k != "pages"} | {
            "ids": [p["id"] for p in loops["pages"]]}


def pairs_checked(job: Job, pairs_dir: Path) -> None:
    job.note["pairs"] = {"key": job.keys.pairs, "dir": str(pairs_dir), "stats": recorded(pairs_dir, STATS)}
    if recorded(pairs_dir)["pairs"]:
        job.guard(list(datasets.load_from_disk(str(pairs_dir / DATASET))["doc_id"]), f"the pairs of {pairs_dir}")


def sft_without_pairs(cfg: DictConfig, keys, note: dict | None = None) -> str | None:
    """"sft" where DPO's pairs are built and hold none and `dpo.on_no_pairs=sft`: the SFT model is
    evaluated as this DPO run, keyed as such (so the SFT job's runs are reused). While running
    (`note` given) the reason is recorded, and without that setting it is an error."""
    pairs_dir = artifact_dir(cfg.paths.artifacts_dir, "pairs", cfg.family.name, keys.pairs)
    if not is_complete(pairs_dir) or recorded(pairs_dir)["pairs"]:
        return None
    why = f"{pairs_dir} holds no pairs (see its stats.json): no candidate was rejectable"
    if note is None:  # planning: only the setting decides
        return "sft" if cfg.dpo.on_no_pairs == "sft" else None
    if cfg.dpo.on_no_pairs != "sft":
        raise ValueError(f"{why}; sample more (sampling.n), change pairs.rejected, or set "
                         "dpo.on_no_pairs=sft to evaluate the SFT model as this DPO run")
    # A model that never loops in sampling gives DPO nothing to correct: evaluate the SFT model
    # unchanged, recorded as such, instead of failing a whole sweep.
    log.warning("%s: evaluating the SFT model unchanged (dpo.on_no_pairs=sft)", why)
    note["dpo_skipped"] = why
    return "sft"
