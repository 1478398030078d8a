"""Evaluation stage: the stage's model generates on one evaluation set's documents, each output is
scored, and the run folder is written (stages/runfiles.py) and logged to W&B (tracking.py).

  naming       stages/naming.py: the run folder, <run-id> = <label>-<eval set>-<key>
  generation   here: the model's outputs, or a finished run's rows where they are the same
               (stages/reuse.py: the same key, or the 1x run of a k x budget set)
  writing      stages/runfiles.py: predictions, metrics, the completion marker
  logging      tracking.log_run, between metrics.json and the marker
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from degenbench.decoding import mitigation
from degenbench.tracking import provenance
from degenbench.models.chat import page_check
from degenbench.documents import Document, open_pages
from degenbench.models.families import load_processor, load_trained
from degenbench.decoding.generate import decoding_record, generate, release
from degenbench.decoding.rerank import best_of_n
from degenbench.decoding.vllm import repetition_detection
from degenbench.metrics import score_output, settings
from degenbench.metrics.detectors import flags as detector_flags
from degenbench.stages import reuse, store
from degenbench.stages.naming import lock_for, run_dir_for, run_ids
from degenbench.stages.runfiles import write_inputs, write_run

log = logging.getLogger(__name__)


def run(cfg: DictConfig, eval_set: str, docs: list[Document], model_dir: Path | None, key: str,
        note: dict | None = None, base_run: Path | None = None, reference_dir: Path | None = None) -> Path:
    """Evaluate the stage's model (`model_dir`; None: the family's base) on `docs`, the evaluation
    set `eval_set`, into `<runs_dir>/<label>-<eval_set>-<key>/`; `note` is kept in metrics.json
    (the artifact keys, the pairs, why DPO was skipped). A run already complete there is returned
    as it is; a run elsewhere with the same key gives its rows, and `base_run` (the same pages at
    1x, given for a budget above 1x) the rows of pages that ended before its limit (stages/reuse.py).
    `reference_dir`: the model DPO started from (mitigation=best_of_n reranks by the log-ratio)."""
    run_dir = run_dir_for(cfg, eval_set, key)
    if store.is_complete(run_dir):
        log.info("DONE %s already evaluated: %s", run_dir.name, run_dir)
        return run_dir
    lock = lock_for(cfg, run_dir)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):  # a concurrent identical job waits, then finds the run done
        if store.is_complete(run_dir):
            log.info("DONE %s evaluated by a concurrent job: %s", run_dir.name, run_dir)
            return run_dir
        run_dir.mkdir(parents=True, exist_ok=True)  # an interrupted evaluation's finished batches are kept
        log.info("run %s: %s (%s) on %d documents of %s", run_dir.name, cfg.family.name, cfg.family.size,
                 len(docs), eval_set)
        write_inputs(cfg, run_dir, docs, model_dir)
        out = outputs(cfg, run_dir, docs, model_dir, key, base_run, reference_dir)
        record = {"pretrained": str(cfg.family.pretrained), "model_dir": str(model_dir) if model_dir else None,
                  **(note or {}), **out.record}
        write_run(cfg, run_dir, key, out.table, out.skipped, run_ids(cfg, eval_set), record, out.provenance)
        return run_dir


@dataclass
class Outputs:
    """A run's per-document rows and what made them."""
    table: pd.DataFrame
    skipped: list[dict]
    record: dict  # decoding as applied; `reused`: the run rows came from, if any
    provenance: dict  # code, libraries, device and precision, the checkpoint


def outputs(cfg: DictConfig, run_dir: Path, docs: list[Document], model_dir: Path | None, key: str,
            base_run: Path | None, reference_dir: Path | None = None) -> Outputs:
    """The rows of `docs`: a finished run with the same `key` (the same model, pages and decoding)
    gives all of them, no generation; else the model generates those `base_run` cannot give."""
    source = reuse.same_key(cfg.paths.runs_dir, key, run_dir)
    if source is not None:
        table, done = reuse.rows(source)
        log.info("%s: the same evaluation as %s: its %d rows reused", run_dir.name, source.name, len(table))
        return Outputs(table, done["skipped"], {"decoding": done["decoding"], "reused": {
            "from": source.name, "pages": len(table), "generated": 0}}, done["provenance"])

    base = reuse.extendable(cfg, base_run)
    kept, todo = (reuse.unfinished(base, [d.id for d in docs]) if base is not None else (None, None))
    model, processor = generation_model(cfg, model_dir, cfg.generation,
                                        mitigation.attempts(cfg.generation, cfg.get("mitigation")))
    reference = _reference(cfg, model, reference_dir) if mitigation.reranks(cfg) else None
    table, skipped = evaluate(cfg, model, processor, docs if todo is None else [d for d in docs if d.id in todo],
                              shards=run_dir / "shards", reference=reference)
    if reference is not None:
        release(reference)
    record = {}
    if kept is not None:
        table = reuse.merge(kept, table, [d.id for d in docs])
        record["reused"] = {"from": base.name, "pages": len(kept), "generated": len(todo)}
        log.info("%s: %d pages ended before the 1x limit in %s (reused), %d generated at this budget",
                 run_dir.name, len(kept), base.name, len(todo))
    record["decoding"] = decoding_record(model, cfg.generation)
    if not mitigation.is_none(cfg):  # each attempt's settings, as applied
        record["decoding"]["attempts"] = [decoding_record(model, g)
                                          for g in mitigation.attempts(cfg.generation, cfg.mitigation)]
    # what ran it (before the engine goes)
    prov = provenance.collect(cfg, getattr(model, "device", None), getattr(model, "dtype", None))
    release(model)  # a vLLM engine holds its GPU until shut down; the next job may train
    return Outputs(table, skipped, record, prov)


def _reference(cfg: DictConfig, model, reference_dir: Path | None):
    """The reference model best-of-N scores against (HF: it reads the samples' log-probabilities)."""
    if cfg.stage != "dpo" or reference_dir is None:
        raise ValueError(f"mitigation={cfg.mitigation.name} reranks by DPO's implicit reward: it needs stage=dpo "
                         f"(this job is stage={cfg.stage}); evaluate the SFT model with another mitigation")
    if cfg.generation.get("backend", "hf") != "hf":
        raise ValueError(f"mitigation={cfg.mitigation.name} scores samples with HF models; use generation.backend=hf")
    return load_trained(cfg.family, cfg.device, reference_dir)[0]


def evaluate(cfg: DictConfig, model, processor, docs: list[Document],
             shards: Path, reference=None) -> tuple[pd.DataFrame, list[dict]]:
    """Per-document records for `docs` (greedy by default) and the skipped documents. Each
    finished batch is kept in `shards`: a rerun only does the batches not yet kept."""
    bs, metrics = cfg.generation.batch_size, settings(cfg.metrics)
    starts = range(0, len(docs), bs)
    batches = store.Shards(shards, len(starts), "evaluation")
    with tqdm(total=len(docs), desc=f"eval {cfg.family.name}/{cfg.stage}", unit="doc") as bar:
        for i, start in enumerate(starts):
            if i not in batches.kept:
                batches.put(i, *_evaluate_batch(cfg, model, processor, docs[start:start + bs], i, metrics, reference))
            bar.update(len(docs[start:start + bs]))
    return batches.read()


def _evaluate_batch(cfg: DictConfig, model, processor, docs: list[Document], i: int, metrics, reference=None):
    skipped = []
    batch = open_pages(docs, cfg.data.get("max_image_pixels"), skipped, page_check(cfg.family, processor))
    if not batch:
        return [], skipped
    def attempt(images, gen, seed):
        return generate(model, processor, cfg.family, images, gen, seed=seed if gen.do_sample else None)

    seed = cfg.seed * 100_000 + i * 100
    if reference is not None:  # best-of-N: N samples per page, the highest implicit reward kept (last)
        def sample(images, gen, n, s):
            return generate(model, processor, cfg.family, images, gen, num_return_sequences=n, seed=s)

        def rerank(gen_n, images, gen, n, s):
            return best_of_n(gen_n, model, reference, processor, cfg.family, images, gen, n, cfg.dpo.beta, s)
        pages = mitigation.best_of_n(sample, rerank, [im for _, im in batch], cfg.generation, cfg.mitigation, seed)
    else:  # a mitigation's attempts (one, for none); the last is the page's output, all are counted
        pages = mitigation.run(attempt, [im for _, im in batch], cfg.generation, cfg.get("mitigation"), seed=seed)
    # vLLM's repetition test at the sizes degenbench gives vLLM at this budget: one detector of several
    vllm_rule = repetition_detection(OmegaConf.to_container(cfg.generation.loop_rule, resolve=True),
                                     cfg.generation.max_new_tokens)
    rows = []
    for (doc, _), tries in zip(batch, pages):
        out = tries[-1][1]
        rows.append({"doc_id": doc.id, "truth": doc.text, "prediction": out.text, "repetitive": doc.repetitive,
                     "new_tokens": out.new_tokens, "hit_limit": out.hit_limit, "loop_stopped": out.loop_stopped,
                     "seconds": out.seconds, "batch": i, "token_ids": out.token_ids, **out.inputs,
                     "decoding": "; ".join(doc.meta.get("decoding", [])),  # what showing the page took
                     "attempts": len(tries), "new_tokens_all": sum(o.new_tokens for _, o in tries),
                     "seconds_all": sum(o.seconds for _, o in tries),
                     "attempt_outputs": [asdict(a) for a, _ in tries],
                     **score_output(doc, out.text, out.hit_limit, out.token_ids, metrics, out.loop_stopped),
                     **detector_flags(out.text, out.token_ids, vllm_rule)})
    return rows, skipped


def generation_model(cfg: DictConfig, model_dir: Path | None, gen: DictConfig, gens: list[DictConfig] = ()):
    """(model, processor) to generate with: HF, or a vLLM engine on the stage's full weights (a
    LoRA stage: its merged copy, an artifact of its own built once beside the others)."""
    if gen.get("backend", "hf") != "vllm":
        return load_trained(cfg.family, cfg.device, model_dir)
    from degenbench.decoding import vllm

    if model_dir is not None and (Path(model_dir) / "adapter_config.json").is_file():
        trained = Path(model_dir).parent  # <kind>/<name>-<key>: the merged copy has the same key

        def merge(tmp: Path):
            model, processor = load_trained(cfg.family, cfg.device, model_dir)
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)

        name, key = trained.name.rsplit("-", 1)
        model_dir = store.build_once(cfg.paths.artifacts_dir, "merged", name, key, merge)
    return vllm.load(cfg.family, model_dir, gens), load_processor(cfg.family)
