"""Reference stage (`stage=reference`): no model. Each reference system (degenbench/models/reference_systems.py)
answers every page of every evaluation set, scored with the same metrics into a run folder like a
model's (predictions.parquet, metrics.json, config.yaml, heldout_ids.json, _COMPLETE.json):

outputs/runs/<system>-reference-<eval set>-<key>/    family = the system, size "-", stage reference

The key holds what defines the outputs and their scores: the system (Tesseract's version,
settings and traineddata), the training documents (data identity and seed: the blind baselines
count them), the eval set's identity and the metrics; never the family, beta, generation or
training settings. So in a sweep over families and betas every reference job after the first
finds its runs complete and returns at once. A token-budget variant of a set (heldout@4x) holds
the same pages, and a system that generates no tokens answers them alike: it is the base set's run.

A system that cannot run here (Tesseract not installed) is never dropped silently: a warning,
and a skip record in its run folder (metrics.json `{"skipped_system": ..., "why": ...}`, no
completion marker) that the report lists; a later job where it is installed runs it (its key
changes with the installed version).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from degenbench import io
from degenbench.tracking import provenance
from degenbench.models import reference_systems
from degenbench.config import REFERENCE
from degenbench.documents import Document, iter_pages
from degenbench.documents.evalsets import EvalSet
from degenbench.metrics import score_output, settings
from degenbench.stages import store
from degenbench.stages.runfiles import write_run

log = logging.getLogger(__name__)
SIZE = "-"  # a reference system has no model size
BATCH = 16  # pages per kept shard; fixed, so a run resumes alike whichever job continues it


@dataclass
class Planned:
    """One reference run: a system on one evaluation set."""
    evalset: EvalSet
    name: str  # the eval set's name in the run (a budget variant's base set)
    system: str
    spec: dict
    key: str
    run_dir: Path
    answer: Callable[[list[Document], list[Document]], list[str]]  # the built system (reference.<system>)


def run_dir_for(cfg: DictConfig, system: str, eval_set: str, key: str) -> Path:
    return Path(cfg.paths.runs_dir) / f"{system}-{REFERENCE}-{eval_set}-{key}"


def plan(cfg: DictConfig, data_key: str, sets: list[EvalSet]) -> list[Planned]:
    """The job's reference runs: every system on every distinct set of pages."""
    out, seen = [], set()
    built = {system: reference_systems.build(cfg, system) for system in reference_systems.systems(cfg)}  # once per job
    for s in sets:
        name = getattr(s, "base", "") or s.name  # heldout@4x: heldout's pages, heldout's run
        for system, answer in built.items():
            if (name, system) in seen:
                continue
            seen.add((name, system))
            spec = reference_systems.spec(cfg, system, answer)
            key = store.key_of(REFERENCE, spec, data_key, s.identity, cfg.metrics)
            out.append(Planned(s, name, system, spec, key, run_dir_for(cfg, system, name, key), answer))
    return out


def run(cfg: DictConfig, p: Planned, docs: list[Document], train: list[Document], note: dict) -> Path:
    """The reference run `p` on `docs` (its eval set's documents), `train` being the training
    split; a complete run is returned as it is (also one a concurrent job just finished)."""
    if not store.is_complete(p.run_dir):
        p.run_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(p.run_dir.parent / f".{p.run_dir.name}.lock")):
            if not store.is_complete(p.run_dir):
                _run(cfg, p, docs, train, note)
                return p.run_dir
    log.info("DONE %s already evaluated: %s", p.run_dir.name, p.run_dir)
    return p.run_dir


def _ids(cfg: DictConfig, p: Planned) -> dict:
    return {"family": p.system, "size": SIZE, "stage": REFERENCE, "beta": None, "seed": cfg.seed,
            "eval_set": p.name, "mitigation": "-", "training": ""}


def _run(cfg: DictConfig, p: Planned, docs: list[Document], train: list[Document], note: dict) -> None:
    p.run_dir.mkdir(exist_ok=True)
    if "missing" in p.spec:
        log.warning("reference system %s is skipped on %s: %s. Its rows are missing from every table; "
                    "the report lists it as skipped", p.system, p.name, p.spec["missing"])
        io.write_json(p.run_dir / "metrics.json", {"run_id": p.run_dir.name, **_ids(cfg, p),
                                                   "skipped_system": p.system, "why": p.spec["missing"],
                                                   "system": p.spec})
        return
    log.info("run %s: reference system %s on %d documents of %s", p.run_dir.name, p.system, len(docs), p.name)
    io.write_text(p.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    io.write_json(p.run_dir / "heldout_ids.json", [d.id for d in docs])
    table, skipped = _outputs(cfg, p, docs, train, p.run_dir / "shards")
    prov = provenance.collect(cfg)
    prov.pop("checkpoint", None)  # the job's family is no part of a reference run: `system` says what ran
    write_run(cfg, p.run_dir, p.key, table, skipped, _ids(cfg, p), {"system": p.spec, **note}, prov,
              group=p.system)


def _outputs(cfg: DictConfig, p: Planned, docs: list[Document], train: list[Document],
             shards: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Per-document rows in a model run's columns: the output, no tokens generated, never at a
    limit; `seconds` is each page's equal share of its batch's wall clock, as for a model."""
    metrics, answer = settings(cfg.metrics), p.answer
    starts = range(0, len(docs), BATCH)
    batches = store.Shards(shards, len(starts), f"reference {p.system}")
    bar = tqdm(total=len(docs), desc=f"reference {p.system} on {p.name}", unit="doc")
    for i, start in enumerate(starts):
        if i in batches.kept:
            bar.update(len(docs[start:start + BATCH]))
            continue
        skipped = []  # the pages a model run skips (unreadable, too large): the same documents are scored
        batch = [d for d, _ in iter_pages(docs[start:start + BATCH], cfg.data.get("max_image_pixels"), skipped)]
        t = time.perf_counter()
        outs = list(answer(train, batch)) if batch else []
        if len(outs) != len(batch) or not all(isinstance(o, str) for o in outs):
            raise ValueError(f"reference.{p.system} answered {len(outs)} pages of {len(batch)}, or not with strings: "
                             "a reference system returns one output string per document, in order")
        each = (time.perf_counter() - t) / max(1, len(batch))
        batches.put(i, [{"doc_id": d.id, "truth": d.text, "prediction": out, "repetitive": d.repetitive,
                         "new_tokens": 0, "hit_limit": False,
                         "loop_stopped": False, "seconds": each, "batch": i, "token_ids": [],
                         **score_output(d, out, False, [], metrics)} for d, out in zip(batch, outs)], skipped)
        bar.update(len(docs[start:start + BATCH]))
    bar.close()
    return batches.read()
