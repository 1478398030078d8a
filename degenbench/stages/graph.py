"""The stage graph: a job (family, stage, beta) builds or reuses its prerequisites, then evaluates
the stage's model on every evaluation set (`eval`).

  vanilla: base                                  -> eval
  sft:     base -> sft                           -> eval
  dpo:     base -> sft -> candidates -> pairs -> dpo(beta) -> eval
  reference: no model: the reference systems on every set (stages/reference.py)

The graph is declared once, in GRAPH (each artifact: what it needs, what keys it, how it is built
and checked, stages/builders.py) and STAGES (the artifact each stage evaluates); `build` walks it
and Keys derives every key from it. Each artifact is keyed by exactly what defines it (plus its
prerequisites' keys): the settings that change the result, never paths, logging or checkpointing.
A beta sweep builds SFT, candidates and pairs once per family, a trained model is reused across
evaluation sets, and a finished job reruns in seconds.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from degenbench import io
from degenbench.decoding import mitigation
from degenbench.tracking import provenance
from degenbench.models import recipes
from degenbench.config import REFERENCE, validate
from degenbench.documents import Split, load_split, teacher
from degenbench.documents.evalsets import EvalSet, by_content, data_identity, eval_sets, for_set, generation
from degenbench.models.families import precision
from degenbench.stages import builders, evaluate, reference
from degenbench.stages.builders import Job
from degenbench.stages.data import assert_no_heldout, assert_no_shared_pages
from degenbench.stages.judge import key_spec as judge_key
from degenbench.stages.naming import run_dir_for
from degenbench.stages.store import build_once, is_complete, key_of
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
        fam["pretrained"] = recipes.recipe_hash(cfg.family)
        fam.pop("revision", None)
    elif Path(fam["pretrained"]).is_dir():  # a local snapshot: what it holds, not where it lies
        fam["pretrained"] = {"fingerprint": io.fingerprint(fam["pretrained"])}
        fam.pop("revision", None)
    return fam


def _data(c: DictConfig, split: Callable[[], Split]) -> tuple:
    # what trains: a content-keyed source's training pages (held-out pages key their own runs)
    return data_identity(c.data, split().train if by_content(c.data) else None, c.paths.cache_dir), c.seed


def _training(c: DictConfig, stage: DictConfig) -> dict:
    spec = OmegaConf.to_container(stage, resolve=True)
    spec["trainer"] = result_settings(stage.trainer)
    return spec | {"processes": c.accelerate.num_processes, "precision": training_precision(c, stage.trainer)}


def _sft(c: DictConfig, _) -> tuple:
    if c.sft.method == "none":  # the base itself, unchanged: nothing of training defines it
        return ({"method": "none"},)
    sft = _training(c, c.sft)
    if sft["trainer"].get("gradient_accumulation_steps", 1) > 1 or sft["processes"] > 1:
        # micro-batches weighed by their answer tokens (stages/sft.py's Trainer), no longer each by its
        # own mean: an older artifact trained so is another model. One batch on one process: unchanged
        sft["loss"] = "token mean of the accumulated batch"
    if (loops := teacher.spec(c.data, c.family.name)) is not None:  # none: the key of before the option
        sft["teacher_loops"] = loops
    return (sft,)


def _pairs(c: DictConfig, _) -> tuple:
    rule = {"tail_chars": c.metrics.tail_chars, "min_repeats": c.metrics.min_repeats}  # what is degenerate
    pairs = OmegaConf.to_container(c.pairs, resolve=True)
    if pairs.get("match") is None:  # every pair: the key pairs had before the option
        pairs.pop("match", None)
    return judge_key(c.judge), pairs, rule


def _dpo(c: DictConfig, _) -> tuple:
    dpo = _training(c, c.dpo)
    dpo.pop("on_no_pairs")  # what happens when there are no pairs: no DPO model is built
    dpo.pop("name", None)  # a label; the settings say what it is
    if dpo.get("method", "dpo") == "dpo":  # DPOTrainer: the key it had before other methods
        dpo.pop("method", None)
    return (dpo,)


def _family(c: DictConfig) -> str:
    return c.family.name


def _per_beta(c: DictConfig) -> str:
    return f"{c.family.name}-b{c.dpo.beta}"


@dataclass(frozen=True)
class Artifact:
    """One node of the stage graph, in artifacts/<kind>/<name>-<key>/. Its key hashes the kind, the
    keys of `needs` (in order) and `parts`; a source (no needs: the pages, the starting model) is
    keyed by its parts alone."""
    kind: str
    needs: tuple[str, ...]
    parts: Callable[[DictConfig, Callable[[], Split]], tuple]  # (cfg, the job's split) -> what defines it
    build: Callable[[Job, Path], dict | None] | None = None  # (job, work folder) -> facts; None: not built here
    resumable: bool = False  # the builder continues an interrupted build's work (store.build_once)
    check: Callable[[Job, Path | None], None] | None = None  # once it is there, built or reused
    instead: Callable[..., str | None] | None = None  # (cfg, keys[, note]) -> the artifact evaluated in its place
    name: Callable[[DictConfig], str] = _family


GRAPH: dict[str, Artifact] = {a.kind: a for a in (
    Artifact("data", (), _data, check=builders.has_training_pages),
    Artifact("base", (), lambda c, _: (base_spec(c),)),
    Artifact("sft", ("base", "data"), _sft, builders.train_sft, resumable=True, check=builders.sft_checked),
    Artifact("candidates", ("sft",), lambda c, _: (c.sampling, precision(c.family, c.device)),
             builders.sample, resumable=True),
    Artifact("pairs", ("candidates",), _pairs, builders.judge_and_pair, check=builders.pairs_checked),
    Artifact("dpo", ("sft", "pairs"), _dpo, builders.train_dpo, resumable=True,
             instead=builders.sft_without_pairs, name=_per_beta),
)}
STAGES = {"vanilla": "base", "sft": "sft", "dpo": "dpo"}  # the artifact a stage evaluates (reference: none)


def order(kind: str) -> list[str]:
    """`kind` after all it needs, each once: the order `build` visits them."""
    out: list[str] = []
    for need in GRAPH[kind].needs:
        out += [k for k in order(need) if k not in out]
    return out + [kind]


class Keys:
    """The artifact keys of one job's config, one per GRAPH node, and `model`: the key of the
    model the stage evaluates (reference: none)."""
    data: str
    base: str
    sft: str
    candidates: str
    pairs: str
    dpo: str

    def __init__(self, cfg: DictConfig, split: Callable[[], Split] | None = None):
        split = split or (lambda: load_split(cfg.data, cfg.seed))
        for kind, a in GRAPH.items():
            parts = a.parts(cfg, split)
            setattr(self, kind, key_of(kind, *(getattr(self, n) for n in a.needs), *parts) if a.needs
                    else key_of(*parts))
        self.model = getattr(self, STAGES[cfg.stage]) if cfg.stage in STAGES else None

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


def build(job: Job, kind: str) -> str:
    """Build or reuse `kind`, each of its needs first (depth first, each once), running every
    node's check once it is there; returns the kind whose model is there: `kind`, or the one its
    `instead` names (DPO without pairs: SFT)."""
    if kind in job.dirs:
        return kind
    a = GRAPH[kind]
    for need in a.needs:
        build(job, need)
    if a.instead is not None and (other := a.instead(job.cfg, job.keys, job.note)) is not None:
        return build(job, other)
    path = None
    if a.build is not None:
        path = build_once(job.cfg.paths.artifacts_dir, kind, a.name(job.cfg), getattr(job.keys, kind),
                          lambda tmp: a.build(job, tmp), record=job.made, resumable=a.resumable)
    job.dirs[kind] = path
    if a.check is not None:
        a.check(job, path)
    return kind


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
    """The run folders of a job's evaluation sets, from its keys (where what is built already
    decides that another artifact is evaluated, e.g. DPO without pairs: keyed as that one)."""
    if cfg.stage == REFERENCE:  # keyed by the data, seed, set and system: no family, no beta
        return [p.run_dir for p in reference.plan(cfg, keys.data, sets)]
    if (instead := GRAPH[STAGES[cfg.stage]].instead) is not None and (other := instead(cfg, keys)) is not None:
        keys.model = getattr(keys, other)
    return [run_dir_for(cfg, s.name, keys.eval(cfg, s)) for s in sets]


def _lazy_split(cfg: DictConfig) -> Callable[[], Split]:
    """The job's split, loaded once and only when needed (a finished job loads no document)."""
    cache: list[Split] = []

    def split() -> Split:
        if not cache:
            cache.append(load_split(cfg.data, cfg.seed))
        return cache[0]
    return split


def _load_sets(cfg: DictConfig, sets: list[EvalSet], train: list) -> tuple[dict[str, list], Callable]:
    """Each set's documents by set name (pages held by two sets, heldout and heldout@4x, loaded
    once), none of them a training page; and the guard that checks other ids (what an artifact
    trained on) against them: no evaluated page of `data` is ever trained on."""
    docs: dict[str, EvalSet] = {}
    for s in sets:
        docs.setdefault(key_of(s.identity), s)
    loaded = {k: s.load() for k, s in docs.items()}
    evaluated = {s.name: loaded[key_of(s.identity)] for s in sets}

    def guard(used_ids, what: str) -> None:
        for s in sets:
            if not s.external:  # ids mean something within one source only
                assert_no_heldout([d.id for d in evaluated[s.name]], used_ids, what, s.name)

    guard([d.id for d in train], "the training split")
    for s in docs.values():
        if s.external:  # another source: compared with the training pages by content
            assert_no_shared_pages(evaluated[s.name], train, f"eval set {s.name!r}", cfg.paths.cache_dir)
    return evaluated, guard


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
    keys, sets = Keys(cfg, split), _sets(cfg, split)
    _check_teacher_loops(cfg, sets)
    runs = _plan(cfg, keys, sets)
    if all(is_complete(r) for r in runs):  # nothing to do: not even the documents are loaded
        for r in runs:
            log.info("DONE %s already evaluated: %s", r.name, r)
        return runs
    train = split().train
    evaluated, guard = _load_sets(cfg, sets, train)
    if cfg.stage == REFERENCE:
        return [reference.run(cfg, p, evaluated[p.evalset.name], train, {"keys": {"data": keys.data}})
                for p in reference.plan(cfg, keys.data, sets)]

    job = Job(cfg, keys, train, guard, made={"provenance": provenance.collect(cfg)})
    kind = build(job, STAGES[cfg.stage])
    # the model evaluated, keyed as what it is: a DPO job without pairs evaluates the SFT model, so
    # the SFT job's runs (and the other betas') are this job's results, reused rather than generated
    keys.model = getattr(keys, kind)
    model_dir = job.dirs[kind] / MODEL_DIR if job.dirs[kind] is not None else None
    record = {"keys": keys.record(), **job.note}
    # what DPO started from: best-of-N's reference (mitigation=best_of_n)
    reference_dir = job.dirs["sft"] / MODEL_DIR if kind == "dpo" and job.dirs.get("sft") else None
    done: dict[str, Path] = {}
    for s in sets:  # a k x budget set after its 1x set extends the 1x run
        budget = {"multiplier": s.budget, "base_set": s.base, "max_new_tokens": generation(cfg, s).max_new_tokens}
        done[s.name] = evaluate.run(for_set(cfg, s), s.name, evaluated[s.name], model_dir, keys.eval(cfg, s),
                                    record | {"budget": budget}, base_run=done.get(s.base) if s.budget > 1 else None,
                                    reference_dir=reference_dir)
    return [done[s.name] for s in sets]
