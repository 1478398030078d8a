"""Evaluation stage: generate on one evaluation set's documents, score each, write the run, log to W&B.

outputs/runs/<run-id>/          run-id = <family>-<size>-<stage>[-b<beta>]-<eval set>-<key>
  predictions.parquet   one row per evaluated document (output, diagnostics, quality)
  metrics.json          summary: rates with 95% intervals, means, counts, skipped documents; the
                        eval set, the artifact keys, the pairs behind a DPO model, provenance
  config.yaml           the resolved config
  heldout_ids.json      the ids of the documents this run was evaluated on
  training.json         the completion record of the trained model (SFT or DPO: steps, log history)
  _COMPLETE.json        written last: the run is finished
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from degenbench import io, mitigation, provenance, tracking
from degenbench.chat import page_check
from degenbench.documents import Document, open_pages
from degenbench.families import load_processor, load_trained, release
from degenbench.generate import decoding_record, generate
from degenbench.metrics import score_output, settings, summarize
from degenbench.stages import reuse, store

log = logging.getLogger(__name__)


def run_label(cfg: DictConfig) -> str:
    label = f"{cfg.run_name}-b{cfg.dpo.beta}" if cfg.stage == "dpo" else cfg.run_name
    if not mitigation.is_none(cfg):  # e.g. -repetition_penalty=1.1
        label += "-" + mitigation.label(cfg).replace(" ", "_")
    return label


def evaluate(cfg: DictConfig, model, processor, docs: list[Document],
             shards: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Per-document records for `docs` (greedy by default) and the skipped documents. Each
    finished batch is kept in `shards`: a rerun only does the batches not yet kept."""
    bs, metrics = cfg.generation.batch_size, settings(cfg.metrics)
    starts = range(0, len(docs), bs)
    batches = store.Shards(shards, len(starts), "evaluation")
    with tqdm(total=len(docs), desc=f"eval {cfg.family.name}/{cfg.stage}", unit="doc") as bar:
        for i, start in enumerate(starts):
            if i not in batches.kept:
                batches.put(i, *_evaluate_batch(cfg, model, processor, docs[start:start + bs], i, metrics))
            bar.update(len(docs[start:start + bs]))
    return batches.read()


def _evaluate_batch(cfg: DictConfig, model, processor, docs: list[Document], i: int, metrics):
    skipped = []
    batch = open_pages(docs, cfg.data.get("max_image_pixels"), skipped, page_check(cfg.family, processor))
    if not batch:
        return [], skipped
    def attempt(images, gen, seed):
        return generate(model, processor, cfg.family, images, gen, seed=seed if gen.do_sample else None)

    # a mitigation's attempts (one, for none); the last is the page's output, all are counted
    pages = mitigation.run(attempt, [im for _, im in batch], cfg.generation, cfg.get("mitigation"),
                           seed=cfg.seed * 100_000 + i * 100)
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
                     **score_output(doc, out.text, out.hit_limit, out.token_ids, metrics, out.loop_stopped)})
    return rows, skipped


def run_dir_for(cfg: DictConfig, eval_set: str, key: str) -> Path:
    return Path(cfg.paths.runs_dir) / f"{run_label(cfg)}-{eval_set}-{key}"


def generation_model(cfg: DictConfig, model_dir: Path | None, gen: DictConfig, gens: list[DictConfig] = ()):
    """(model, processor) to generate with: HF, or a vLLM engine on the stage's full weights (a
    LoRA stage: its merged copy, an artifact of its own built once beside the others)."""
    if gen.get("backend", "hf") != "vllm":
        return load_trained(cfg.family, cfg.device, model_dir)
    from degenbench.backends import vllm

    if model_dir is not None and (Path(model_dir) / "adapter_config.json").is_file():
        trained = Path(model_dir).parent  # <kind>/<name>-<key>: the merged copy has the same key

        def merge(tmp: Path):
            model, processor = load_trained(cfg.family, cfg.device, model_dir)
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)

        name, key = trained.name.rsplit("-", 1)
        model_dir = store.build_once(cfg.paths.artifacts_dir, "merged", name, key, merge)
    return vllm.load(cfg.family, model_dir, gens), load_processor(cfg.family)


def run(cfg: DictConfig, eval_set: str, docs: list[Document], model_dir: Path | None, key: str,
        note: dict | None = None, base_run: Path | None = None) -> Path:
    """Evaluate the stage's model (`model_dir`; None: the family's base) on `docs`, the evaluation
    set `eval_set`, into `<runs_dir>/<label>-<eval_set>-<key>/`; `note` is kept in metrics.json
    (the artifact keys, the pairs, why DPO was skipped). A run already complete there is returned
    as it is; a run elsewhere with the same key gives its rows, and `base_run` (the same pages at
    1x, given for a budget above 1x) the rows of pages that ended before its limit (stages/reuse.py)."""
    run_dir = run_dir_for(cfg, eval_set, key)
    if store.is_complete(run_dir):
        log.info("DONE %s already evaluated: %s", run_dir.name, run_dir)
        return run_dir
    lock = Path(cfg.paths.artifacts_dir) / ".locks" / "runs" / f"{run_dir.name}.lock"  # out of the runs folder
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):  # a concurrent identical job waits, then finds the run done
        if store.is_complete(run_dir):
            log.info("DONE %s evaluated by a concurrent job: %s", run_dir.name, run_dir)
            return run_dir
        return _run(cfg, run_dir, eval_set, docs, model_dir, key, note, base_run)


def _run(cfg: DictConfig, run_dir: Path, eval_set: str, docs: list[Document], model_dir: Path | None, key: str,
         note: dict | None, base_run: Path | None) -> Path:
    run_id = run_dir.name
    run_dir.mkdir(parents=True, exist_ok=True)  # an interrupted evaluation's finished batches are kept
    log.info("run %s: %s (%s) on %d documents of %s", run_id, cfg.family.name, cfg.family.size, len(docs), eval_set)
    io.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    io.write_json(run_dir / "heldout_ids.json", [d.id for d in docs])
    if model_dir is not None and (Path(model_dir).parent / store.COMPLETE).is_file():
        # the training record travels with the run, so the run folder alone can be analysed
        trained = json.loads((Path(model_dir).parent / store.COMPLETE).read_text())
        trained.pop("doc_ids", None)
        io.write_json(run_dir / "training.json", trained)
    ids = {"family": cfg.family.name, "size": cfg.family.size, "stage": cfg.stage,
           "beta": cfg.dpo.beta if cfg.stage == "dpo" else None, "seed": cfg.seed, "eval_set": eval_set,
           "mitigation": mitigation.label(cfg)}
    record = {"pretrained": str(cfg.family.pretrained), "model_dir": str(model_dir) if model_dir else None, **(note or {})}

    source = reuse.same_key(cfg.paths.runs_dir, key, run_dir)
    if source is not None:  # the same model, pages and decoding, already evaluated: no generation
        table, done = reuse.rows(source)
        log.info("%s: the same evaluation as %s: its %d rows reused", run_id, source.name, len(table))
        write_run(cfg, run_dir, key, table, done["skipped"], ids, record | {
            "decoding": done["decoding"], "reused": {"from": source.name, "pages": len(table), "generated": 0}},
            done["provenance"])
        return run_dir

    base = reuse.extendable(cfg, base_run)
    kept, todo = (reuse.unfinished(base, [d.id for d in docs]) if base is not None else (None, None))
    model, processor = generation_model(cfg, model_dir, cfg.generation,
                                        mitigation.attempts(cfg.generation, cfg.get("mitigation")))
    table, skipped = evaluate(cfg, model, processor, docs if todo is None else [d for d in docs if d.id in todo],
                              shards=run_dir / "shards")
    if kept is not None:
        table = reuse.merge(kept, table, [d.id for d in docs])
        record["reused"] = {"from": base.name, "pages": len(kept), "generated": len(todo)}
        log.info("%s: %d pages ended before the 1x limit in %s (reused), %d generated at this budget",
                 run_id, len(kept), base.name, len(todo))
    decoding = decoding_record(model, cfg.generation)
    if not mitigation.is_none(cfg):  # each attempt's settings, as applied
        decoding["attempts"] = [decoding_record(model, g) for g in mitigation.attempts(cfg.generation, cfg.mitigation)]
    # what ran it: code, libraries, device and precision, the checkpoint (before the engine goes)
    prov = provenance.collect(cfg, getattr(model, "device", None), getattr(model, "dtype", None))
    release(model)  # a vLLM engine holds its GPU until shut down; the next job may train
    write_run(cfg, run_dir, key, table, skipped, ids, record | {"decoding": decoding}, prov)
    return run_dir


IDS = ("family", "size", "stage", "beta", "seed", "eval_set", "mitigation")  # what names a run in every table


def write_run(cfg: DictConfig, run_dir: Path, key: str, table: pd.DataFrame, skipped: list[dict], ids: dict,
              record: dict, prov: dict, group: str | None = None) -> dict:
    """Finish a run folder from its per-document `table`: predictions.parquet (the run's `ids` in
    front), metrics.json (ids, `record`, the summary, provenance), the W&B run (grouped by `group`,
    default the family), then the completion marker. Model and reference runs alike."""
    run_id = run_dir.name
    table = table.drop(columns=["run_id", *IDS], errors="ignore")  # rows taken from another run name it
    table.insert(0, "run_id", run_id)
    for col in reversed(IDS):
        table.insert(1, col, ids[col])
    with io.atomic_path(run_dir / "predictions.parquet") as tmp:
        table.to_parquet(tmp, index=False)

    summary = {"run_id": run_id, **{k: ids[k] for k in IDS}, **record,
               **summarize(table.to_dict("records"), skipped, cfg.metrics.alpha),
               "provenance": prov}
    io.write_json(run_dir / "metrics.json", summary)  # local results first: W&B may fail
    summary |= tracking.log_run(cfg, run_dir, run_id, key, summary, table, group=group)
    io.write_json(run_dir / "metrics.json", summary)
    io.write_json(run_dir / store.COMPLETE, {"key": key, "run_id": run_id})
    shutil.rmtree(run_dir / "shards", ignore_errors=True)
    log.info("%s: degeneration %.3f [%.3f, %.3f], CER %.3f, score %.3f, JSON valid %.3f -> %s",
             run_id, summary["degeneration_rate"], *summary["degeneration_ci95"], summary["cer"],
             summary["score"], summary["json_valid_rate"], run_dir)
    return summary
