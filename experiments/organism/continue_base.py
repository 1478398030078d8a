"""Does a shipped base read its own style better with more steps? Continue one base's last
curriculum stage (style-A pages, half strips of 1-4 rows, half whole pages) at a
constant learning rate, printing the greedy CER on the same 64 four-row pages its standin.json
reports (`own_4_rows`) every `--every` steps, and the whole reading record at the end.

    python experiments/organism/continue_base.py --family qwen2.5-vl-3b --steps 1200 --every 200 --lr 3e-4
Nothing is saved: it measures how far more steps go, for the recipe in conf/family/<f>.yaml.
"""
import argparse
import random
import time

import torch

from degenbench.models import pretrain
from degenbench.config import compose
from degenbench.models.families import load_trained
from degenbench.metrics import cer

p = argparse.ArgumentParser()
p.add_argument("--family", default="qwen2.5-vl-3b")
p.add_argument("--steps", type=int, default=1200)
p.add_argument("--every", type=int, default=200)
p.add_argument("--lr", type=float, default=3e-4)
p.add_argument("--threads", type=int, default=None)
args = p.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
cfg = compose([f"family={args.family}", "logger=disabled", "device=cpu"])
fam = cfg.family
model, processor = load_trained(fam, "cpu", None)  # the shipped base
page, stage = fam.standin.page, fam.standin.base.stages[-1]
rng_eval = random.Random(f"degenbench-base-eval:{page.rows}")  # the pages of standin.json's own_4_rows
pages = [pretrain.style_a_page(rng_eval, page.cols, page.rows, page.rows, page.cell) for _ in range(64)]


def own_cer() -> float:
    model.eval()
    with torch.no_grad():
        preds = pretrain._generate(model, processor, [im for im, _ in pages], pretrain.PROMPTS[0], page.cols * page.rows + 16)
    model.train()
    return sum(cer(a, q) for (_, a), q in zip(pages, preds)) / len(pages)


torch.manual_seed(0)
rng = random.Random("degenbench-continue")
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
t0 = time.time()
print(f"{args.family}: step 0 (shipped base), own 4-row CER {own_cer():.4f}", flush=True)
model.train()
for step in range(1, args.steps + 1):
    loss = model(**pretrain._batch(processor, rng, fam.standin.base.batch_size, page, stage, fam.prompt)).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(), opt.zero_grad()
    if step % args.every == 0:
        print(f"{args.family}: step +{step} ({time.time() - t0:.0f} s), loss {loss.item():.4f}, "
              f"own 4-row CER {own_cer():.4f}", flush=True)
model.eval()
print(pretrain.reading_record(model, processor, page, fam.prompt), flush=True)
