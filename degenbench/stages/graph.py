"""The stage graph: a job (family, stage, beta) builds or reuses its prerequisites, then evaluates
the stage's model on every evaluation set (`eval`).

  vanilla: base                                  -> eval
  sft:     base -> sft                           -> eval
  dpo:     base -> sft -> candidates -> pairs -> dpo(beta) -> eval
  reference: no model: the reference systems on every set (stages/reference.py)

Each artifact is keyed by exactly what defines it (plus its prerequisites' keys): the settings
that change the result, never paths, logging or checkpointing. A beta sweep builds SFT, candidates
and pairs once per family, a trained model is reused across evaluation sets, and a finished job
reruns in seconds.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import datasets
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from degenbench import io, mitigation, provenance, standins
from degenbench.config import REFERENCE, validate
from degenbench.documents import Split, load_split, teacher
from degenbench.documents.evalsets import EvalSet, by_content, data_identity, eval_sets, for_set, generation
from degenbench.families import load_processor, precision, release
from degenbench.stages import evaluate, launch, reference
from degenbench.stages.data import assert_no_heldout, assert_no_shared_pages
from degenbench.stages.judge import judge_candidates
from degenbench.stages.judge import key_spec as judge_key
from degenbench.stages.pairs import DATASET, STATS, build_pairs
from degenbench.stages.sample import CANDIDATES, sample_candidates
from degenbench.stages.store import artifact_dir, build_once, is_complete, key_of, recorded
from degenbench.stages.training import MODEL_DIR, result_settings, training_precision

log = logging.getLogger(__name__)


def base_spec(cfg: DictConfig) -> dict:
    """What defines the starting model: the family (hub id and revision), with a stand-in's recipe
    in place of its path. Batch sizes, the stand-in's cache folder and LoRA targets are not part
    of it (the training keys hold what training uses)."""
    fam = OmegaConf.to_container(cfg.family, resolve=True)
    for k in ("sizes", "train", "standin", "lora_target_modules"):
        fam.pop(k, None)
    if cfg.family.size == "tiny":
        fam["pretrained"] = standins.recipe_hash(cfg.family)
        fam.pop("revision", None)
    elif Path(fam["pretrained"]).is_dir():  # a local snapshot: what it holds, not where it lies
        fam["pretrained"] = {"fingerprint": io.fingerprint(fam["pretrained"])}
        fam.pop("revision", None)
    return fam


class Keys:
    """The artifact keys of one job's config."""

    def __init__(self, cfg: DictConfig, split: Callable[[], Split] | None = None):
        c = cfg
        # what trains: a content-keyed source's training pages (held-out pages key their own runs)
        train = ((split or (lambda: load_split(c.data, c.seed)))().train if by_content(c.data) else None)
        data = data_identity(c.data, train, c.paths.cache_dir)
        self.data = key_of(data, c.seed)
        self.base = key_of(base_spec(c))

        def training(stage: DictConfig) -> dict:
            spec = OmegaConf.to_container(stage, resolve=True)
            spec["trainer"] = result_settings(stage.trainer)
            return spec | {"processes": c.accelerate.num_processes, "precision": training_precision(c, stage.trainer)}

        sft = training(c.sft)
        if (loops := teacher.spec(c.data, c.family.name)) is not None:  # none: the key of before the option
            sft["teacher_loops"] = loops
        self.sft = key_of("sft", self.base, self.data, sft)
        self.candidates = key_of("candidates", self.sft, c.sampling, precision(c.family, c.device))
        rule = {"tail_chars": c.metrics.tail_chars, "min_repeats": c.metrics.min_repeats}
        self.pairs = key_of("pairs", self.candidates, judge_key(c.judge), c.pairs, rule)
        dpo = training(c.dpo)
        dpo.pop("on_no_pairs")  # what happens when there are no pairs: no DPO model is built
        self.dpo = key_of("dpo", self.sft, self.pairs, dpo)
        self.model = {"vanilla": self.base, "sft": self.sft, "dpo": self.dpo}.get(c.stage)  # reference: none

    def eval(self, cfg: DictConfig, evalset: EvalSet) -> str:
        """The set's documents and decoding (its token budget: heldout@4x is keyed apart from heldout;
        not reuse_budget, which gives the same outputs: tests/test_budget.py)."""
        gen = OmegaConf.to_container(generation(cfg, evalset), resolve=True)
        gen.pop("reuse_budget", None)
        parts = [evalset.identity, gen, cfg.metrics, precision(cfg.family, cfg.device)]
        if (mit := mitigation.key_spec(cfg)) is not None:  # none: the keys runs had before mitigations
            parts.append({"mitigation": mit})
        return key_of("eval", self.model, *parts)

    def record(self) -> dict:
        return dict(vars(self))


def _sets(cfg: DictConfig, split) -> list[EvalSet]:
    """The job's evaluation sets; the validation split (at any budget) only where it chooses
    something: DPO's beta, a setting of any stage when it is all `eval` asks for (e.g. the
    teacher-loop share, `stage=sft eval=[validation]`), and the reference systems' rows."""
    sets = eval_sets(cfg, split)
    if all(e.base == "validation" for e in sets):
        return sets
    return [e for e in sets if e.base != "validation" or cfg.stage in ("dpo", REFERENCE)]


def _check_teacher_loops(cfg: DictConfig, sets: list[EvalSet]) -> None:
    """A teacher loop must run past every budget it is evaluated or sampled at, or a model that
    learnt it could look as if it finished."""
    if cfg.stage not in ("sft", "dpo") or (spec := teacher.spec(cfg.data, cfg.family.name)) is None:
        return
    budgets = {s.name: generation(cfg, s).max_new_tokens for s in sets} | {"sampling": cfg.sampling.max_new_tokens}
    name, most = max(budgets.items(), key=lambda kv: kv[1])
    if spec["tokens"] <= most:
        raise ValueError(f"data.teacher_loop_tokens={spec['tokens']} must exceed every budget evaluated, but "
                         f"{name} runs to {most} tokens; raise data.teacher_loop_tokens above {most}")


def _plan(cfg: DictConfig, keys: Keys, sets: list[EvalSet]) -> list[Path]:
    """The run folders of a job's evaluation sets, from its keys (a DPO job whose pairs are known
    to be empty evaluates the SFT model, keyed as such)."""
    no_pairs = artifact_dir(cfg.paths.artifacts_dir, "pairs", cfg.family.name, keys.pairs)
    if cfg.stage == "dpo" and cfg.dpo.on_no_pairs == "sft" and is_complete(no_pairs) and not recorded(no_pairs)["pairs"]:
        keys.model = keys.sft
    if cfg.stage == REFERENCE:  # keyed by the data, seed, set and system: no family, no beta
        return [p.run_dir for p in reference.plan(cfg, keys.data, sets)]
    return [evaluate.run_dir_for(cfg, s.name, keys.eval(cfg, s)) for s in sets]


def _lazy_split(cfg: DictConfig) -> Callable[[], Split]:
    """The job's split, loaded once and only when needed (a finished job loads no document)."""
    cache: list[Split] = []

    def split() -> Split:
        if not cache:
            cache.append(load_split(cfg.data, cfg.seed))
        return cache[0]
    return split


def run_dirs(cfg: DictConfig) -> list[Path]:
    """The run folders a job writes (or finds complete), without running it: where its results are."""
    split = _lazy_split(cfg)
    return _plan(cfg, Keys(cfg, split), _sets(cfg, split))


def run_job(cfg: DictConfig) -> Path:
    """Run one job; returns the run folder of its first evaluation set (all are logged)."""
    return job_runs(cfg)[0]


def job_runs(cfg: DictConfig) -> list[Path]:
    """Run one job; returns the run folders of all its evaluation sets, in `eval` order."""
    validate(cfg)  # ranges and choices, also for library use (compose + run_job)
    if cfg.family.size == "shape":
        raise ValueError("family.size=shape has random weights: it is for speed and memory benchmarks "
                         "(benchmarks/), never for a run whose quality is reported; use size=tiny or real")
    split = _lazy_split(cfg)
    keys, root, fam = Keys(cfg, split), cfg.paths.artifacts_dir, cfg.family.name

    sets = _sets(cfg, split)
    _check_teacher_loops(cfg, sets)
    runs = _plan(cfg, keys, sets)
    if cfg.stage == REFERENCE:
        planned = reference.plan(cfg, keys.data, sets)
    else:
        eval_keys = [keys.eval(cfg, s) for s in sets]
    if all(is_complete(r) for r in runs):  # nothing to do: not even the documents are loaded
        for r in runs:
            log.info("DONE %s already evaluated: %s", r.name, r)
        return runs
    train = split().train
    docs: dict[str, EvalSet] = {}  # each set of documents once: heldout@4x holds heldout's pages
    for s in sets:
        docs.setdefault(key_of(s.identity), s)
    loaded = {k: s.load() for k, s in docs.items()}
    evaluated = {s.name: loaded[key_of(s.identity)] for s in sets}

    def guard(used_ids, what: str) -> None:  # no evaluated page of `data` is ever trained on
        for s in sets:
            if not s.external:  # ids mean something within one source only
                assert_no_heldout([d.id for d in evaluated[s.name]], used_ids, what, s.name)

    guard([d.id for d in train], "the training split")
    for s in docs.values():
        if s.external:  # another source: compared with the training pages by content
            assert_no_shared_pages(evaluated[s.name], train, f"eval set {s.name!r}", cfg.paths.cache_dir)
    if cfg.stage == REFERENCE:
        return [reference.run(cfg, p, evaluated[p.evalset.name], train, {"keys": {"data": keys.data}})
                for p in planned]
    model_dir, note = None, {}
    made = {"provenance": provenance.collect(cfg)}  # kept in every artifact this job builds

    if cfg.stage in ("sft", "dpo"):
        if not train:
            raise ValueError(f"stage={cfg.stage} needs training documents, but data.heldout="
                             f"{cfg.data.heldout} holds out all of them")
        sft_dir = build_once(root, "sft", fam, keys.sft, lambda tmp: launch.train(cfg, "sft", tmp),
                             record=made, resumable=True)
        guard(recorded(sft_dir)["doc_ids"], f"the SFT data of {sft_dir}")
        if loops := recorded(sft_dir).get("teacher_loops"):  # which training pages carried a teacher loop
            note["teacher_loops"] = {k: v for k, v in loops.items() if k != "pages"} | {
                "ids": [p["id"] for p in loops["pages"]]}
        model_dir = sft_dir / MODEL_DIR

    if cfg.stage == "dpo":
        by_id = {d.id: d for d in train}

        def sample(tmp):
            model, processor = evaluate.generation_model(cfg, sft_dir / MODEL_DIR, cfg.sampling, [cfg.sampling])
            try:
                return sample_candidates(cfg, model, processor, train, tmp)
            finally:
                release(model)  # the engine's memory goes before DPO trains

        def pairs(tmp):
            cands = pd.read_parquet(cand_dir / CANDIDATES)
            return build_pairs(cfg, by_id, judge_candidates(cfg, by_id, cands), tmp, load_processor(cfg.family))

        cand_dir = build_once(root, "candidates", fam, keys.candidates, sample, record=made, resumable=True)
        pairs_dir = build_once(root, "pairs", fam, keys.pairs, pairs, record=made)
        note["pairs"] = {"key": keys.pairs, "dir": str(pairs_dir), "stats": recorded(pairs_dir, STATS)}
        if recorded(pairs_dir)["pairs"] == 0:
            why = f"{pairs_dir} holds no pairs (see its stats.json): no candidate was rejectable"
            if cfg.dpo.on_no_pairs != "sft":
                raise ValueError(f"{why}; sample more (sampling.n), change pairs.rejected, or set "
                                 "dpo.on_no_pairs=sft to evaluate the SFT model as this DPO run")
            # A model that never loops in sampling gives DPO nothing to correct: evaluate the SFT
            # model unchanged, recorded as such, instead of failing a whole sweep.
            log.warning("%s: evaluating the SFT model unchanged (dpo.on_no_pairs=sft)", why)
            note["dpo_skipped"] = why
        else:
            pair_ids = list(datasets.load_from_disk(str(pairs_dir / DATASET))["doc_id"])
            guard(pair_ids, f"the pairs of {pairs_dir}")
            dpo_dir = build_once(root, "dpo", f"{fam}-b{cfg.dpo.beta}", keys.dpo,
                                 lambda tmp: launch.train(cfg, "dpo", tmp, sft_dir=sft_dir, pairs_dir=pairs_dir),
                                 record=made, resumable=True)
            model_dir = dpo_dir / MODEL_DIR

    if "dpo_skipped" in note:  # the model evaluated is the SFT model: keyed as such, so the SFT
        # job's runs (and the other betas') are this job's results, reused rather than generated
        keys.model = keys.sft
        eval_keys = [keys.eval(cfg, s) for s in sets]
    record = {"keys": keys.record(), **note}
    done: dict[str, Path] = {}
    for s, k in zip(sets, eval_keys):  # a k x budget set after its 1x set extends the 1x run
        done[s.name] = evaluate.run(for_set(cfg, s), s.name, evaluated[s.name], model_dir, k, record | {
            "budget": {"multiplier": s.budget, "base_set": s.base, "max_new_tokens": generation(cfg, s).max_new_tokens}},
            base_run=done.get(s.base) if s.budget > 1 else None)
    return [done[s.name] for s in sets]
