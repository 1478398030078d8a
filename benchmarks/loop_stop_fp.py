"""False positives of loop-aware stopping: outputs that end on their own, which LoopStop must never
cut (a cut row is labelled degenerate; the rule says an output that ended is not). Two sources:

  tables   transcriptions of pages with legitimately repeated rows (ledgers, blank form lines,
           tables of contents, rows of zeros), 2 to 48 identical rows amid ordinary text, each
           ending with the end-of-turn token: a model that reads them right ends them itself
  toy      every output of the committed toy sweep (results/toy/runs) that ended on its own

Each is tokenized with the family's tokenizer and replayed through LoopStop token by token, as
generation runs it: the rule's tail test alone (what LoopStop did before: cut at 4 occurrences of
the last 15 characters) and LoopStop as configured (the tail test and a loop spanning min_run of
the budget; generation.loop_rule.min_run, 0.5), at the toy budget (160) and a real one (4096). min_run 0 is the tail
test alone: a loop of any length is cut.

    python benchmarks/loop_stop_fp.py --out results/benchmarks/loop_stop_fp.md
"""
import argparse
import random

import pandas as pd
import torch
import yaml
from transformers import AutoTokenizer

from common import emit
from degenbench.models.arch import adapter
from degenbench.config import PACKAGE, ROOT, compose
from degenbench.documents import synthetic, truth_json
from degenbench.decoding.loopstop import LoopStop

p = argparse.ArgumentParser()
p.add_argument("--families", nargs="+", default=["qwen2.5-vl-3b", "qwen2.5-vl-7b", "nanonets-ocr2-3b",
                                                "olmocr-2-7b", "gemma-3-4b"])
p.add_argument("--min-runs", type=float, nargs="+", default=[0.25, 0.5], help="LoopStop's min_run values to audit "
               "(generation.loop_rule.min_run: 0.5)")
p.add_argument("--budgets", type=int, nargs="+", default=[160, 4096])
p.add_argument("--out", default=None)
args = p.parse_args()

ROWS = {"ledger": "Item {i:02d} .......... R$ 10,00", "form": "Nome: ______________________________",
        "contents": "Capítulo 1 ................ 12", "zeros": "0,00    0,00    0,00    0,00"}


def tables(seed: int = 0) -> list[tuple[str, int, str]]:
    """(kind, identical rows, answer) for each row kind and count, inside ordinary page text."""
    rng, out = random.Random(seed), []
    for kind, row in ROWS.items():
        for n in (2, 3, 4, 6, 8, 12, 16, 24, 48):
            f = synthetic.sample_fields(rng, 64, 8, 6)
            lines = f["text"].split("\n")
            body = lines[:3] + [row.format(i=1)] * n + lines[3:]
            out.append((kind, n, truth_json(f | {"text": "\n".join(body)})))
    return out


def cut(tok, ids: list[int], eos: int, rule: dict) -> bool:
    """Does LoopStop, fed `ids` one token at a time, cut the row before its end-of-turn token?"""
    stop = LoopStop(tok, 1, {eos}, **rule)
    for k in range(1, len(ids) + 1):
        if stop(torch.tensor([[0] + ids[:k]]), None)[0]:
            return True
    return False


lines = ["| source | family | budget | outputs that end on their own within it | cut by the tail test alone (before) | " +
         " | ".join(f"cut at min_run {m}" for m in args.min_runs) + " |", "|---" * (5 + len(args.min_runs)) + "|"]
toy = {}
for run in sorted((ROOT / "results/toy/runs").iterdir()):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    preds = pd.read_parquet(run / "predictions.parquet")
    toy.setdefault(cfg["family"]["name"], []).extend(preds.loc[~preds["hit_limit"], "prediction"])
for family in args.families:
    cfg = compose([f"family={family}"])
    tok = AutoTokenizer.from_pretrained(PACKAGE / "standins" / family)
    eos = tok.convert_tokens_to_ids(adapter(cfg.family).special_tokens["eos"])  # the end of a turn
    sources = {"tables": [t for _, _, t in tables()], "toy": toy.get(family, [])}
    for source, texts in sources.items():
        encoded = [tok(t, add_special_tokens=False).input_ids + [eos] for t in texts]
        for budget in args.budgets:
            fits = [ids for ids in encoded if len(ids) <= budget]  # longer ones would hit the limit
            rule = dict(cfg.generation.loop_rule) | {"budget": budget}
            counts = [sum(cut(tok, ids, eos, dict(rule, min_run=m)) for ids in fits) for m in [0.0, *args.min_runs]]
            lines.append(f"| {source} | {family} | {budget} | {len(fits)} | " + " | ".join(map(str, counts)) + " |")
            print(lines[-1], flush=True)
by_rows = ["", "Tables, by the number of identical rows (qwen2.5-vl-3b's tokenizer, budget 4096): rows cut by the tail "
           "test alone (before) / by LoopStop at min_run 0.25 / as configured (0.5), over the four row kinds.\n",
           "| identical rows | cut before | min_run 0.25 | cut now (0.5) |", "|---|---|---|---|"]
cfg = compose(["family=qwen2.5-vl-3b"])
tok = AutoTokenizer.from_pretrained(PACKAGE / "standins/qwen2.5-vl-3b")
eos = tok.convert_tokens_to_ids("<|im_end|>")
rule = dict(cfg.generation.loop_rule) | {"budget": 4096}
for n in (2, 3, 4, 6, 8, 12, 16, 24, 48):
    encoded = [tok(t, add_special_tokens=False).input_ids + [eos] for _, k, t in tables() if k == n]
    by_rows.append(f"| {n} | {sum(cut(tok, i, eos, dict(rule, min_run=0.0)) for i in encoded)} of {len(encoded)} | "
                   f"{sum(cut(tok, i, eos, dict(rule, min_run=0.25)) for i in encoded)} of {len(encoded)} | "
                   f"{sum(cut(tok, i, eos, rule) for i in encoded)} of {len(encoded)} |")
emit("LoopStop's false positives on outputs that end on their own", lines + by_rows, args.out)
