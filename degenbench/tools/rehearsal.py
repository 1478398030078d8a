"""The real path, rehearsed offline: hub-faithful snapshots (degenbench.models.snapshots) of the families,
loaded as `family.size=real`, on A4 pages from a JSONL manifest, through every stage:
vanilla -> SFT -> candidates -> pairs -> DPO -> eval, with tiny budgets so it runs on a CPU.

    python -m degenbench.tools.rehearsal --out results/rehearsal    # writes README.md and rehearsal.json

It checks mechanics, never quality: the stand-ins read 16x4 grid pages, not A4 scans.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from degenbench.documents import synthetic

FAMILIES = ("qwen2.5-vl-7b", "gemma-3-4b")  # the Qwen file with top_k 1 (issue QwenLM/Qwen3-VL#722), and Gemma3
N_SAMPLES = 6


def write_pages(folder: Path, n: int = 6, seed: int = 0, repetitive: float = 0.3) -> Path:
    """`n` A4 pages (PNG) and their manifest `pages.jsonl` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, fields in enumerate(synthetic.a4_fields(n, seed, repetitive=repetitive)):
        name = f"page-{i:03d}.png"
        synthetic.render_a4(fields).save(folder / name)
        rows.append(json.dumps({"id": f"a4-{seed}-{i:03d}", "image": name, "truth": fields}, ensure_ascii=False))
    (folder / "pages.jsonl").write_text("\n".join(rows) + "\n")
    return folder / "pages.jsonl"


def overrides(family: str, snapshot: Path, manifest: Path, results_dir: Path) -> list[str]:
    """The job config of the rehearsal: the real family path with the snapshot as its weights,
    budgets small enough for two CPU cores."""
    return [f"family={family}", "family.size=real", f"family.sizes.real.pretrained={snapshot}",
            "data=manifest", f"data.path={manifest}", "data.heldout=2", "data.max_new_tokens=24",
            f"paths.results_dir={results_dir}", "logger=disabled", "device=cpu", "seed=0",
            "generation.batch_size=2", "sft.trainer.max_steps=4", "sft.trainer.per_device_train_batch_size=2", "sft.trainer.gradient_accumulation_steps=1",
            "sft.trainer.learning_rate=2e-3",  # enough to move the blind stand-in off its one output
            f"sampling.n={N_SAMPLES}", "sampling.batch_size=2", "pairs.rejected=mixed",
            "dpo.trainer.max_steps=1", "dpo.trainer.per_device_train_batch_size=2", "dpo.trainer.gradient_accumulation_steps=1"]


def run(family: str, root: Path, pages: Path) -> dict:
    """One family's chain on its snapshot; what the runs and artifacts recorded about it."""
    import pandas as pd

    from degenbench.models import snapshots
    from degenbench.config import compose
    from degenbench.stages.graph import run_job

    start = time.perf_counter()
    snap = snapshots.ensure(compose([f"family={family}"]).family, root / "snapshots")
    base = overrides(family, snap, pages, root / "results")
    runs = {stage: run_job(compose(base + [f"stage={stage}"])) for stage in ("dpo", "vanilla", "sft")}
    seconds = time.perf_counter() - start
    art = root / "results" / "artifacts"
    record = {k: _complete(art / k) for k in ("sft", "candidates", "pairs", "dpo")}
    cands = pd.read_parquet(next((art / "candidates").glob("*/candidates.parquet")))
    preds = pd.concat(pd.read_parquet(r / "predictions.parquet") for r in runs.values())
    metrics = json.loads((runs["dpo"] / "metrics.json").read_text())
    published = json.loads((snap / "generation_config.json").read_text())
    return {"family": family, "hub_id": json.loads((snap / snapshots.MARKER).read_text())["hub_id"],
            "seconds": round(seconds, 1), "published_generation_config": published,
            "distinct_samples": sorted(cands.groupby("doc_id")["text"].nunique().tolist()), "n": N_SAMPLES,
            "image_tokens": {"generation": sorted(set(preds["image_tokens"])), "sampling": sorted(set(cands["image_tokens"])),
                             "sft_batches": record["sft"]["inputs"]["image_tokens"],
                             "dpo_batches": record["dpo"]["inputs"]["image_tokens"]},
            "bos_tokens": {"generation": sorted(set(preds["bos_tokens"])), "sampling": sorted(set(cands["bos_tokens"])),
                           "sft_batches": record["sft"]["inputs"]["bos_tokens"],
                           "dpo_batches": record["dpo"]["inputs"]["bos_tokens"]},
            "decoding": {"evaluation": metrics["decoding"], "sampling": record["candidates"]["decoding"]},
            "pairs": {k: record["pairs"][k] for k in ("pairs", "rejected_unfinished")},
            "stages": {stage: json.loads((r / "metrics.json").read_text())["n_docs"] for stage, r in runs.items()}}


def _complete(kind_dir: Path) -> dict:
    (path,) = [p for p in kind_dir.iterdir() if p.is_dir()]
    return json.loads((path / "_COMPLETE.json").read_text())


def report(results: list[dict], command: str) -> str:
    rows = ["| family (snapshot of) | distinct of N samples per page | image tokens: generation / sampling / SFT / DPO "
            "batches | BOS per row: generation / sampling / SFT / DPO | rejected left open | seconds |", "|---" * 6 + "|"]
    for r in results:
        it, bos = r["image_tokens"], r["bos_tokens"]
        fmt = lambda d: " / ".join(",".join(map(str, d[k])) for k in ("generation", "sampling", "sft_batches", "dpo_batches"))  # noqa: E731
        rows.append(f"| {r['family']} ({r['hub_id']}) | {', '.join(map(str, r['distinct_samples']))} of {r['n']} | "
                    f"{fmt(it)} | {fmt(bos)} | {r['pairs']['rejected_unfinished']} of {r['pairs']['pairs']} | {r['seconds']} |")
    settings = ["| family | published generation_config.json (token ids mapped to the stand-in's) | applied in "
                "evaluation | applied in sampling | recorded as not applied |", "|---" * 5 + "|"]
    for r in results:
        ev, sa = r["decoding"]["evaluation"], r["decoding"]["sampling"]
        keep = lambda d: {k: v for k, v in d["applied"].items() if not k.endswith("token_id")}  # noqa: E731
        settings.append(f"| {r['family']} | `{json.dumps(r['published_generation_config'])}` | `{json.dumps(keep(ev))}` | "
                        f"`{json.dumps(keep(sa))}` | `{json.dumps(ev['checkpoint_not_applied'])}` |")
    return "\n".join([
        "# Rehearsal of the real path on hub-faithful snapshots\n", f"Made by: `{command}`\n",
        "Each family's stand-in weights in a folder with its hub repository's published generation_config.json, "
        "preprocessor_config.json, chat template and tokenizer special-token behaviour (`degenbench-snapshots`; "
        "sources in `standins/hub/`), loaded as `family.size=real`, on six A4 pages (1240x1754, a JSONL manifest; "
        "4 trained on, 2 held out) through vanilla -> SFT (LoRA, 4 steps) -> candidates (N samples per page) -> "
        "pairs -> DPO (1 step) -> evaluation of all three stages, 24 new tokens, 2 CPU threads. It checks the "
        "mechanics a real run depends on, not quality: the stand-ins read 16x4 grid pages, not A4 scans.\n",
        "## What each run recorded\n", *rows, "",
        "Image tokens and BOS counts are read from what the stages recorded: evaluation's predictions and the "
        "candidates (per row), and the SFT and DPO artifacts' records of every training batch (TRL's collators).\n",
        "## Decoding: the settings each run recorded\n", *settings, ""])


def main(argv: list[str] | None = None) -> None:
    import shlex
    import sys
    import tempfile

    from degenbench import io

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/rehearsal")
    p.add_argument("--families", nargs="+", default=["qwen2.5-vl-3b", "qwen2.5-vl-7b", "nanonets-ocr2-3b",
                                                     "olmocr-2-7b", "gemma-3-4b"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="degenbench-rehearsal-") as tmp:
        pages = write_pages(Path(tmp) / "pages")
        results = [run(f, Path(tmp) / f, pages) for f in args.families]
    command = shlex.join(["python", "-m", "degenbench.tools.rehearsal", *(argv if argv is not None else sys.argv[1:])])
    io.write_json(Path(args.out) / "rehearsal.json", results)
    io.write_text(Path(args.out) / "README.md", report(results, command) + "\n")
    print(report(results, command))


if __name__ == "__main__":
    main()
