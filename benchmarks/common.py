"""What the benchmarks share: the toy sweep's SFT model of a family (built or reused from the
artifact store, exactly as the sweep keys it), its held-out pages, and timing."""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from degenbench.config import ROOT, compose
from degenbench.documents import load_split
from degenbench.stages import launch
from degenbench.stages.common import MODEL_DIR, load_trained
from degenbench.stages.graph import Keys
from degenbench.stages.store import build_once


def toy_sft(family: str, overrides: list[str] = ()):
    """(cfg, model, processor, held-out docs) of the toy sweep's SFT model of `family`."""
    cfg = compose(["experiment=toy", f"family={family}", "logger=disabled",
                   f"paths.results_dir={ROOT / 'results'}", *overrides])  # the sweep's store, from anywhere
    train, held = load_split(cfg.data, cfg.seed)
    sft = build_once(cfg.paths.artifacts_dir, "sft", family, Keys(cfg).sft,
                     lambda tmp: launch.train(cfg, "sft", tmp), resumable=True)
    model, processor = load_trained(cfg, sft / MODEL_DIR)
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
    from degenbench.generate import generate

    return [o for rows in batches if rows
            for o in generate(model, processor, cfg.family, [images[i] for i in rows], gen)]


def contiguous(n: int, bs: int) -> list[list[int]]:
    return [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]
