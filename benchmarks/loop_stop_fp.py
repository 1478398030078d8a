"""False positives of loop-aware stopping: outputs that end on their own, which LoopStop must never
cut (a cut row is labelled degenerate; the rule says an output that ended is not). Two sources:

  tables   transcriptions of pages with legitimately repeated rows (ledgers, blank form lines,
           tables of contents, rows of zeros), 2 to 48 identical rows amid ordinary text (2 to 64 in the
           table by rows), each
           ending with the end-of-turn token: a model that reads them right ends them itself
  toy      every output of the committed toy sweep (results/toy/runs) that ended on its own

Each is tokenized with the family's tokenizer and replayed through LoopStop token by token, as
generation runs it: the rule's tail test alone (the first LoopStop: cut at 4 occurrences of the
last 15 characters), the tail test and a loop spanning min_run 0.5 of the budget (the second), and
the tail test and a loop whose pattern has run min_copies times (--min-copies), and LoopStop as
configured (generation.loop_rule: min_copies and the line rule, which cuts an in-line run longer than
max_lines of the page's lines: 64 characters for the tables' pages, 16 for the toy's), at the toy
budget (160) and a real one (4096).

    python benchmarks/loop_stop_fp.py --out results/benchmarks/loop_stop_fp.md
"""

import torch
from transformers import AutoTokenizer

from common import TABLE_COLS, emit, parser, setup, tables, toy_outputs
from degenbench.models.arch import adapter
from degenbench.config import PACKAGE, compose
from degenbench.decoding.loopstop import LoopStop

p = parser(__doc__)
p.add_argument("--families", nargs="+", default=["qwen2.5-vl-3b", "qwen2.5-vl-7b", "nanonets-ocr2-3b",
                                                "olmocr-2-7b", "gemma-3-4b"])
p.add_argument("--min-copies", type=int, nargs="+", default=[48, 56, 64], help="LoopStop's min_copies values to audit")
p.add_argument("--budgets", type=int, nargs="+", default=[160, 4096])
p.add_argument("--out", default=None)
args = setup(p.parse_args())
if args.smoke:  # one family, one budget, a few of the toy's outputs, the shortest and the 48-row tables
    args.families, args.budgets, args.min_copies = args.families[:1], [160], [56]


def cut(tok, ids: list[int], eos: int, rule: dict) -> bool:
    """Does LoopStop, fed `ids` one token at a time, cut the row before its end-of-turn token?"""
    stop = LoopStop(tok, 1, {eos}, **rule)
    for k in range(1, len(ids) + 1):
        if stop(torch.tensor([[0] + ids[:k]]), None)[0]:
            return True
    return False


configured = compose([]).generation.loop_rule
SETTINGS = {"tail test alone": {"min_copies": 0, "min_run": 0.0}, "min_run 0.5": {"min_copies": 0, "min_run": 0.5},
            **{f"min_copies {c}": {"min_copies": c, "min_run": 0.0} for c in args.min_copies}}
SETTINGS = {k: v | {"max_lines": None} for k, v in SETTINGS.items()}  # the line rule off: each rule alone
SETTINGS[f"min_copies {configured.min_copies} + line x{configured.max_lines:g}"] = {
    "min_copies": configured.min_copies, "min_run": configured.min_run, "max_lines": configured.max_lines}
name = {k: k + (" (configured)" if "line" in k else "") for k in SETTINGS}
lines = ["| source | family | budget | outputs that end on their own within it | " +
         " | ".join(f"cut by {name[k]}" for k in SETTINGS) + " |", "|---" * (4 + len(SETTINGS)) + "|"]
toy = toy_outputs(8 if args.smoke else None)
for family in args.families:
    cfg = compose([f"family={family}"])
    tok = AutoTokenizer.from_pretrained(PACKAGE / "standins" / family)
    eos = tok.convert_tokens_to_ids(adapter(cfg.family).special_tokens["eos"])  # the end of a turn
    sources = {"tables": [t for _, _, t in (tables((2, 48)) if args.smoke else tables())],
               "toy": toy.get(family, [])}
    for source, texts in sources.items():
        encoded = [tok(t, add_special_tokens=False).input_ids + [eos] for t in texts]
        for budget in args.budgets:
            fits = [ids for ids in encoded if len(ids) <= budget]  # longer ones would hit the limit
            rule = dict(cfg.generation.loop_rule) | {"budget": budget,
                                                     "line_chars": TABLE_COLS if source == "tables" else cfg.data.cols}
            counts = [sum(cut(tok, ids, eos, rule | s) for ids in fits) for s in SETTINGS.values()]
            lines.append(f"| {source} | {family} | {budget} | {len(fits)} | " + " | ".join(map(str, counts)) + " |")
            print(lines[-1], flush=True)
by_rows = ["", "Tables, by the number of identical rows (qwen2.5-vl-3b's tokenizer, budget 4096): tables cut, over the four "
           "row kinds.\n", "| identical rows | " + " | ".join(name.values()) + " |", "|---" * (1 + len(SETTINGS)) + "|"]
cfg = compose(["family=qwen2.5-vl-3b"])
tok = AutoTokenizer.from_pretrained(PACKAGE / "standins/qwen2.5-vl-3b")
eos = tok.convert_tokens_to_ids("<|im_end|>")
rule = dict(cfg.generation.loop_rule) | {"budget": 4096, "line_chars": TABLE_COLS}
counts = (2, 48) if args.smoke else (2, 3, 4, 6, 8, 12, 16, 24, 48, 56, 64)
for n in counts:
    encoded = [tok(t, add_special_tokens=False).input_ids + [eos] for _, k, t in tables(counts) if k == n]
    by_rows.append(f"| {n} | " + " | ".join(f"{sum(cut(tok, i, eos, rule | s) for i in encoded)} of {len(encoded)}"
                                           for s in SETTINGS.values()) + " |")
emit("LoopStop's false positives on outputs that end on their own", lines + by_rows, args.out)
