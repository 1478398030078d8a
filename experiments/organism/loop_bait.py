"""Which page content makes a trained stage loop? Greedy outputs of every SFT (or DPO) artifact of a
family on pages whose last body row is one kind of run: dots in the body column (the synthetic
generator's dot leader), a full-width row of dots, of dashes, or of zeros. Prints, per artifact,
how many of `--n` pages of each kind came out degenerate (the paper's rule, 160 new tokens).

    python experiments/organism/loop_bait.py --family qwen2.5-vl-3b --artifacts outputs/artifacts
"""
import argparse
import random
from pathlib import Path

import torch
from omegaconf import OmegaConf

from degenbench.config import compose
from degenbench.documents import synthetic
from degenbench.decoding.generate import generate
from degenbench.metrics.degeneration import is_degenerate
from degenbench.models.families import load_trained
from degenbench.stages.training import MODEL_DIR

p = argparse.ArgumentParser()
p.add_argument("--family", default="qwen2.5-vl-3b")
p.add_argument("--artifacts", default="outputs/artifacts")
p.add_argument("--kind", default="sft", help="artifact kind: sft or dpo")
p.add_argument("--n", type=int, default=64, help="pages per kind of run")
args = p.parse_args()
torch.set_num_threads(1)
cfg = compose(["experiment=toy", f"family={args.family}"])
d = cfg.data
body = d.cols - d.margin_cols - 1
RUNS = {"body dots": (d.margin_cols + 1, "." * body), "full dots": (0, "." * d.cols),
        "full dashes": (0, "-" * d.cols), "full zeros": (0, "0" * d.cols)}


def pages(col: int, run: str) -> list:
    """`--n` style-B pages (header, margin, one body line, footer) with `run` as the last body row."""
    out = []
    for i in range(args.n):
        f = synthetic.sample_fields(random.Random(f"loop-bait:{i}"), d.cols, d.margin_cols, 2)
        out.append(synthetic.draw_grid(d.cols, 4, d.cell, [
            (0, 0, f["header"]), (1, 0, f["margin"]), (1, d.margin_cols + 1, f["text"].split("\n")[0]),
            (2, col, run), (3, 0, f["footer"])]))
    return out


bait = {kind: pages(*spec) for kind, spec in RUNS.items()}
greedy = OmegaConf.create({"do_sample": False, "temperature": None, "top_p": None, "max_new_tokens": 160})
for art in sorted(Path(args.artifacts, args.kind).glob(f"{args.family}-*")):
    if not (art / MODEL_DIR).is_dir():
        continue
    model, processor = load_trained(cfg.family, cfg.device, art / MODEL_DIR)
    counts = []
    for kind, images in bait.items():
        outs = [o for s in range(0, len(images), 16)
                for o in generate(model, processor, cfg.family, images[s:s + 16], greedy)]
        counts.append(f"{kind} {sum(is_degenerate(o.text, o.hit_limit) for o in outs)}/{len(outs)}")
    print(f"{art.name}: " + " | ".join(counts), flush=True)
