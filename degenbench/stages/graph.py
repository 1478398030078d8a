"""The stage graph: a job (family, stage, beta) builds or reuses its prerequisites, then evaluates.

  vanilla: base                                  -> eval
  sft:     base -> sft                           -> eval
  dpo:     base -> sft -> candidates -> pairs -> dpo(beta) -> eval

Each artifact is keyed by exactly the config that defines it (plus its prerequisites' keys), so a
beta sweep builds SFT, candidates and pairs once per family, and a finished job reruns in seconds.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from degenbench import evaluate, standins
from degenbench.config import validate
from degenbench.families import load_processor, release
from degenbench.documents import load_split
from degenbench.stages import launch
from degenbench.stages.common import MODEL_DIR, load_trained
from degenbench.stages.data import assert_no_heldout
from degenbench.stages.judge import judge_candidates
from degenbench.stages.pairs import DATASET, build_pairs
from degenbench.stages.sample import CANDIDATES, sample_candidates
from degenbench.stages.store import COMPLETE, build_once, is_complete, key_of

log = logging.getLogger(__name__)


def base_spec(cfg: DictConfig) -> dict:
    """What defines the starting model: the family, with a stand-in's recipe in place of its path."""
    fam = OmegaConf.to_container(cfg.family, resolve=True)
    fam.pop("sizes")
    fam.pop("train")  # batch sizes and memory savers: the training stages' keys hold them
    if cfg.family.size == "tiny":
        fam["pretrained"] = standins.recipe_hash(cfg.family)
    return fam


class Keys:
    """The artifact keys of one job's config."""

    def __init__(self, cfg: DictConfig):
        c = cfg
        self.data = key_of(c.data, c.seed)
        self.base = key_of(base_spec(c))
        self.sft = key_of("sft", self.base, self.data, c.sft, c.accelerate.num_processes)
        self.candidates = key_of("candidates", self.sft, c.sampling)
        rule = {"tail_chars": c.metrics.tail_chars, "min_repeats": c.metrics.min_repeats}
        self.pairs = key_of("pairs", self.candidates, c.judge, c.pairs, rule)
        self.dpo = key_of("dpo", self.sft, self.pairs, c.dpo, c.accelerate.num_processes)
        model = {"vanilla": self.base, "sft": self.sft, "dpo": self.dpo}[c.stage]
        self.eval = key_of("eval", model, self.data, c.generation, c.metrics)


def _recorded(path: Path) -> dict:
    return json.loads((path / COMPLETE).read_text())


def run_job(cfg: DictConfig) -> Path:
    """Run one job; returns its evaluation run folder."""
    validate(cfg)  # ranges and choices, also for library use (compose + run_job)
    if cfg.family.size == "shape":
        raise ValueError("family.size=shape has random weights: it is for speed and memory benchmarks "
                         "(benchmarks/), never for a run whose quality is reported; use size=tiny or real")
    keys, root, fam = Keys(cfg), cfg.paths.artifacts_dir, cfg.family.name
    finished = evaluate.run_dir_for(cfg, keys.eval)
    if is_complete(finished):  # nothing to do: not even the documents are loaded
        log.info("DONE %s already evaluated: %s", finished.name, finished)
        return finished
    train, held = load_split(cfg.data, cfg.seed)
    held_ids = [d.id for d in held]
    model_dir = None

    if cfg.stage in ("sft", "dpo"):
        if not train:
            raise ValueError(f"stage={cfg.stage} needs training documents, but data.heldout="
                             f"{cfg.data.heldout} holds out all {len(held)}")
        assert_no_heldout(held_ids, [d.id for d in train], "the SFT data")
        sft_dir = build_once(root, "sft", fam, keys.sft, lambda tmp: launch.train(cfg, "sft", tmp),
                             resumable=True)
        assert_no_heldout(held_ids, _recorded(sft_dir)["doc_ids"], f"the SFT data of {sft_dir}")
        model_dir = sft_dir / MODEL_DIR

    if cfg.stage == "dpo":
        by_id = {d.id: d for d in train}

        def sample(tmp):
            model, processor = load_trained(cfg, sft_dir / MODEL_DIR)
            try:
                return sample_candidates(cfg, model, processor, train, tmp)
            finally:
                release(model)  # the engine's memory goes before DPO trains

        def pairs(tmp):
            cands = pd.read_parquet(cand_dir / CANDIDATES)
            return build_pairs(cfg, by_id, judge_candidates(cfg, by_id, cands), tmp, load_processor(cfg.family))

        cand_dir = build_once(root, "candidates", fam, keys.candidates, sample, resumable=True)
        pairs_dir = build_once(root, "pairs", fam, keys.pairs, pairs)
        if _recorded(pairs_dir)["pairs"] == 0:
            why = f"{pairs_dir} holds no pairs (see its stats.json): no candidate was rejectable"
            if cfg.dpo.on_no_pairs != "sft":
                raise ValueError(f"{why}; sample more (sampling.n), change pairs.rejected, or set "
                                 "dpo.on_no_pairs=sft to evaluate the SFT model as this DPO run")
            # A model that never loops in sampling gives DPO nothing to correct: evaluate the SFT
            # model unchanged, recorded as such, instead of failing a whole sweep.
            log.warning("%s: evaluating the SFT model unchanged (dpo.on_no_pairs=sft)", why)
            return evaluate.run(cfg, held, sft_dir / MODEL_DIR, keys.eval, note={"dpo_skipped": why})
        pair_ids = list(datasets.load_from_disk(str(pairs_dir / DATASET))["doc_id"])
        assert_no_heldout(held_ids, pair_ids, f"the pairs of {pairs_dir}")
        dpo_dir = build_once(root, "dpo", f"{fam}-b{cfg.dpo.beta}", keys.dpo,
                             lambda tmp: launch.train(cfg, "dpo", tmp, sft_dir=sft_dir, pairs_dir=pairs_dir),
                             resumable=True)
        model_dir = dpo_dir / MODEL_DIR

    return evaluate.run(cfg, held, model_dir, keys.eval)
