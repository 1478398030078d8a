"""Can a from-scratch tiny Qwen2.5-VL stand-in learn to read one grid line? The probe behind the
two stand-in design choices (paper-white normalisation, mrope sections); see results/organism/.

    python experiments/organism/reading_probe.py --cols 16 --steps 400 [--clip-norm] [--mrope 4 6 6]
--cols 1: a single glyph out of ABCD (a 2x2-cell page); else a line of `cols` random characters.
Prints the training loss every 40 steps and the greedy CER on 16 fresh lines.
"""
import argparse
import random

import torch

from degenbench.models import standins
from degenbench.config import compose
from degenbench.documents.synthetic import draw_grid
from degenbench.metrics import cer

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz "

p = argparse.ArgumentParser()
p.add_argument("--cols", type=int, default=16)
p.add_argument("--steps", type=int, default=400)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--clip-norm", action="store_true", help="CLIP image mean/std instead of paper-white 0")
p.add_argument("--mrope", type=int, nargs=3, default=[1, 1, 14])
args = p.parse_args()
torch.manual_seed(0)
fam = compose(["family=qwen2.5-vl-3b", "family.standin.base.then=[]",  # random weights, not a base
               f"family.standin.mrope_section=[{','.join(map(str, args.mrope))}]"]).family
model, proc, _ = standins.init(fam)
if args.clip_norm:
    proc.image_processor.image_mean = [0.48145466, 0.4578275, 0.40821073]
    proc.image_processor.image_std = [0.26862954, 0.26130258, 0.27577711]
tok = proc.tokenizer
prompt = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read."}]}],
                                  add_generation_prompt=True, tokenize=False)


def page(rng):
    if args.cols == 1:
        s = rng.choice("ABCD")
        return s, draw_grid(2, 2, 28, [(0, 0, s)])
    s = "".join(rng.choice(ALPHABET) for _ in range(args.cols)).strip() or "X"
    return s, draw_grid(args.cols, 1, 28, [(0, 0, s)])


def batch(rng, n):
    pages = [page(rng) for _ in range(n)]
    tok.padding_side = "right"
    enc = proc(text=[prompt + s + tok.eos_token for s, _ in pages], images=[im for _, im in pages],
               return_tensors="pt", padding=True)
    labels = torch.full_like(enc["input_ids"], -100)
    for i, (s, _) in enumerate(pages):
        ans = tok(s + tok.eos_token, add_special_tokens=False)["input_ids"]
        end = int(enc["attention_mask"][i].sum())
        labels[i, end - len(ans):end] = torch.tensor(ans)
    enc["labels"] = labels
    return enc


rng = random.Random(0)
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 30))
for step in range(args.steps):
    loss = model(**batch(rng, 32)).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(), sched.step(), opt.zero_grad()
    if step % 40 == 0 or step == args.steps - 1:
        print(f"step {step} loss {loss.item():.3f}", flush=True)
model.eval()
pages = [page(random.Random(f"eval{i}")) for i in range(16)]
tok.padding_side = "left"
enc = proc(text=[prompt] * 16, images=[im for _, im in pages], return_tensors="pt", padding=True)
with torch.no_grad():
    out = model.generate(**enc, max_new_tokens=args.cols + 8, do_sample=False)
preds = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
print("examples:", list(zip([s for s, _ in pages[:3]], preds[:3])))
print(f"CER {sum(cer(s, q) for (s, _), q in zip(pages, preds)) / 16:.4f}")
