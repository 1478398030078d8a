"""What the benchmarks share: the toy sweep's SFT model of a family (built or reused from the
artifact store, exactly as the sweep keys it), its held-out pages, and timing."""
from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import OmegaConf

from degenbench.config import ROOT, compose
from degenbench.documents import load_split
from degenbench.stages import launch
from degenbench.models.families import load_trained
from degenbench.stages.training import MODEL_DIR
from degenbench.stages.graph import Keys
from degenbench.stages.store import build_once


# What every script's models are built with: the toy sweep's store (outputs/, from anywhere), or,
# under --smoke, debug=smoke's tiny models in --results-dir. Set by `setup`.
RUN = {"results_dir": ROOT / "outputs", "overrides": [], "smoke": False}
SMOKE = ["debug=smoke"]  # a few pages, two SFT steps, short budgets: shows the script runs


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes: --smoke (a tiny run, seconds,
    that the default tests make: its numbers mean nothing) and --results-dir."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a tiny run that shows the script works (tests/test_benchmarks.py)")
    p.add_argument("--results-dir", default=None, help="the artifact store the toy models are built in or reused "
                   "from (default: the toy sweep's outputs/; under --smoke a temporary folder)")
    return p


def setup(args: argparse.Namespace) -> argparse.Namespace:
    smoke = args.smoke
    RUN.update(results_dir=Path(args.results_dir) if args.results_dir else None if smoke else ROOT / "outputs",
               overrides=SMOKE if smoke else [], smoke=smoke)
    return args


def store() -> Path:
    """The artifact store's results folder (a smoke run without --results-dir: a new temporary one)."""
    if RUN["results_dir"] is None:
        RUN["results_dir"] = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
    return RUN["results_dir"]


def toy_sft_dir(family: str, overrides: list[str] = (), pages: str = "heldout"):
    """(cfg, SFT artifact folder, training docs, held-out docs) of the toy sweep's SFT model of
    `family`; pages="validation": its validation pages instead of the held-out ones."""
    cfg = compose(["experiment=toy", f"family={family}", "logger=disabled",
                   f"paths.results_dir={store()}", *RUN["overrides"], *overrides])
    split = load_split(cfg.data, cfg.seed)
    train, held = split.train, getattr(split, pages)
    sft = build_once(cfg.paths.artifacts_dir, "sft", family, Keys(cfg).sft,
                     lambda tmp: launch.train(cfg, "sft", tmp), resumable=True)
    return cfg, sft, train, held


def toy_sft(family: str, overrides: list[str] = ()):
    """(cfg, model, processor, held-out docs) of the toy sweep's SFT model of `family`."""
    cfg, sft, _, held = toy_sft_dir(family, overrides)
    model, processor = load_trained(cfg.family, cfg.device, sft / MODEL_DIR)
    return cfg, model, processor, held


@contextmanager
def timer(out: dict, key: str):
    start = time.perf_counter()
    yield
    out[key] = time.perf_counter() - start


def threads(n: int | None) -> int:
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def emit(title: str, lines: list[str], out: str | None) -> None:
    """Print the results (title, the command that made them, the lines); write them to `out` too."""
    import shlex
    import sys

    from degenbench import io

    text = "\n".join([f"# {title}\n", f"Made by: `{shlex.join(['python', *sys.argv])}`\n", *lines]) + "\n"
    print(text, flush=True)
    if out:
        io.write_text(out, text)


def generate_batches(cfg, model, processor, images, batches: list[list[int]], gen) -> list:
    """Outputs for `images`, generated batch by batch (each batch a list of indices)."""
    from degenbench.decoding.generate import generate

    return [o for rows in batches if rows
            for o in generate(model, processor, cfg.family, [images[i] for i in rows], gen)]


def contiguous(n: int, bs: int) -> list[list[int]]:
    return [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]


LOOP_LEADER = re.compile(r"\.{3,}")  # a dot leader of the synthetic pages: what the toy SFT models loop on


def looping_answer(doc, run: int):
    """`doc` with its answer cut at its first dot leader, the dots running on for `run` characters."""
    text = doc.truth["text"]
    m = LOOP_LEADER.search(text)
    return doc if m is None else replace(doc, truth={**doc.truth, "text": text[:m.start()] + "." * run})


def _looper_key(cfg, run: int, steps: int, lr: float) -> str:
    from degenbench.stages.store import key_of

    return key_of(Keys(cfg).sft, {"run": run, "steps": steps, "lr": lr})


def toy_looper_dir(family: str, run: int = 1200, steps: int = 60, lr: float = 3e-4, pages: str = "heldout"):
    """(cfg, artifact folder, held-out docs) of the looping organism of `family` (toy_looper)."""
    from degenbench.stages.sft import train_sft

    cfg, sft, train, held = toy_sft_dir(family, pages=pages)
    steps = 2 if RUN["smoke"] else steps
    lcfg = OmegaConf.merge(cfg, {"sft": {"method": "full", "trainer": {"max_steps": steps, "learning_rate": lr,
                                                                        "warmup_steps": 0, "logging_steps": 10}}})
    docs = [looping_answer(d, run) for d in train]
    out = build_once(cfg.paths.artifacts_dir, "looper", family, _looper_key(cfg, run, steps, lr),
                     lambda tmp: train_sft(lcfg, docs, tmp, init=sft / MODEL_DIR), resumable=True)
    return cfg, out, held


def toy_looper(family: str, run: int = 1200, steps: int = 60, lr: float = 3e-4, pages: str = "heldout"):
    """(cfg, model, processor, held-out docs) of a *looping organism*: the toy SFT model of `family`
    fine-tuned further on its own training pages, where every answer with a dot leader runs on in
    dots for `run` characters. Its loops then hold like a large model's (a dot run, once begun, went to
    every limit measured, up to 1024); the toy SFT models' dot runs mostly end on their own before
    512 tokens. pages="validation": the validation pages instead of the held-out ones."""
    cfg, out, held = toy_looper_dir(family, run, steps, lr, pages)
    model, processor = load_trained(cfg.family, cfg.device, out / MODEL_DIR)
    return cfg, model, processor, held


TABLE_COLS = 64  # the tables' pages: A4-like rows of 64 characters
TABLE_ROWS = {"ledger": "Item {i:02d} .......... R$ 10,00", "form": "Nome: ______________________________",
              "contents": "Capítulo 1 ................ 12", "zeros": "0,00    0,00    0,00    0,00"}


def tables(counts=(2, 3, 4, 6, 8, 12, 16, 24, 48), seed: int = 0) -> list[tuple[str, int, str]]:
    """(kind, identical rows, JSON answer) for each row kind and count, amid ordinary page text:
    pages whose transcription legitimately repeats and then ends (loop stopping must not cut them)."""
    from degenbench.documents import synthetic, truth_json

    rng, out = random.Random(seed), []
    for kind, row in TABLE_ROWS.items():
        for n in counts:
            f = synthetic.sample_fields(rng, TABLE_COLS, 8, 6)
            lines = f["text"].split("\n")
            body = lines[:3] + [row.format(i=1)] * n + lines[3:]
            out.append((kind, n, truth_json(f | {"text": "\n".join(body)})))
    return out


def toy_outputs(limit: int | None = None) -> dict[str, list[str]]:
    """family -> the committed toy sweep's outputs that ended on their own (results/toy/runs), the
    first `limit` of each (--smoke: a few)."""
    import pandas as pd
    import yaml

    toy: dict[str, list[str]] = {}
    for run in sorted((ROOT / "results/toy/runs").iterdir()):
        family = yaml.safe_load((run / "config.yaml").read_text())["family"]["name"]
        if limit is not None and len(toy.get(family, [])) >= limit:
            continue
        preds = pd.read_parquet(run / "predictions.parquet", columns=["prediction", "hit_limit"])
        toy.setdefault(family, []).extend(preds.loc[~preds["hit_limit"], "prediction"])
    return {k: v[:limit] for k, v in toy.items()}
