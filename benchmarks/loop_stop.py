"""(a) Loop-aware stopping on models that loop: batched greedy generation over the toy held-out
pages with two models of each family (--models)
  looper  a looping organism: the toy SFT model fine-tuned so a dot run, once begun, runs on (as a
          large model's loop does; benchmarks/common.py:toy_looper, built once, 1-2 min)
  sft     the toy sweep's SFT model itself, whose dot runs mostly end on their own before 512
          tokens: at a budget below that they count as loops, above it they are not
each generating three ways in one run:
  full   every row runs until it ends or hits the token limit (evaluation's default)
  stop   LoopStop cuts a row once it is caught in a loop (it counts as degenerate): its tail has
         repeated the rule's 4 times (or a stricter --stop-repeats) and its loop's pattern has run
         generation.loop_rule.min_copies times (--min-copies), or sooner, once an in-line run of one
         pattern is longer than max_lines of the page's lines (--max-lines; 0: that rule off)
  clean  the same batches without the rows `full` labels degenerate: what the pages cost without loops
The degeneration overhead is full - clean; stopping removes (full - stop) / (full - clean) of it,
measured in wall-clock seconds (the fastest of --repeats interleaved passes) and in decoding steps
(each batch runs until its longest row ends: deterministic, free of timing noise).
Label agreement: the stop labels (cut, or the paper's rule) against the full-length labels.
A family whose model never loops at a budget has no overhead to remove there (n/a).

    python benchmarks/loop_stop.py --models looper --limits 512 1024 --stop-repeats 4 --repeats 1 --threads 1 --out results/benchmarks/loop_stop.md

results/benchmarks/loop_stop_sft.md was measured with the LoopStop of that time, which cut at the
tail test alone: `--min-copies 0 --min-run 0 --max-lines 0` runs it again. LoopStop then waited for the loop to
span min_run (0.5) of the budget (`--min-copies 0 --min-run 0.5 --max-lines 0`), which gave back half the savings;
it then waited for min_copies copies of the loop's pattern (`--max-lines 0`), and now also cuts an
in-line run that outgrew the page's line (benchmarks/loop_stop_tradeoff.py chose both).
"""
import platform
import time
from datetime import datetime, timezone

from omegaconf import OmegaConf

from common import contiguous, emit, generate_batches, parser, setup, threads, timer, toy_looper, toy_sft
from degenbench.config import compose
from degenbench.metrics.degeneration import is_degenerate

p = parser(__doc__)
p.add_argument("--families", nargs="+", default=["nanonets-ocr2-3b", "qwen2.5-vl-3b", "qwen2.5-vl-7b",
                                                "olmocr-2-7b", "gemma-3-4b"])
p.add_argument("--models", nargs="+", default=["looper", "sft"], choices=["looper", "sft"])
p.add_argument("--limits", type=int, nargs="+", default=[160, 512], help="max_new_tokens to measure at")
p.add_argument("--stop-repeats", type=int, nargs="+", default=[4, 8, 12],
               help="tail repeats at which LoopStop cuts (4: the rule itself)")
p.add_argument("--min-copies", type=int, default=None, help="LoopStop's min_copies (default: generation.loop_rule's)")
p.add_argument("--min-run", type=float, default=None,
               help="LoopStop's min_run (default: generation.loop_rule's); --min-copies 0 --min-run 0 --max-lines 0 is the LoopStop "
                    "that made results/benchmarks/loop_stop_sft.md: the tail test alone")
p.add_argument("--max-lines", type=float, default=None,
               help="LoopStop's max_lines (default: generation.loop_rule's); 0: the line rule off")
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--repeats", type=int, default=3, help="timed passes per mode, interleaved; the fastest is kept")
p.add_argument("--threads", type=int, default=None)
p.add_argument("--out", default=None, help="also write the results here (Markdown, with the command)")
args = setup(p.parse_args())
if args.smoke:  # debug=smoke's models: one family, its few held-out pages, short budgets
    args.families, args.models, args.limits, args.stop_repeats = args.families[:1], ["looper"], [48], [4]
    args.repeats, args.batch_size = 1, 2
n_threads = threads(args.threads)
OVERRIDES = {k: v for k, v in (("min_run", args.min_run), ("min_copies", args.min_copies)) if v is not None}
if args.max_lines is not None:
    OVERRIDES["max_lines"] = args.max_lines or None
started = time.perf_counter()


def decode_steps(outs, rows_per_batch) -> int:
    """Decoding steps the batches took: each runs until its longest row ends (HF generate)."""
    steps, at = 0, 0
    for rows in rows_per_batch:
        steps += max((o.new_tokens for o in outs[at:at + len(rows)]), default=0)
        at += len(rows)
    return steps


def share(full, stop, clean, loops: bool) -> str:
    return f"{(full - stop) / (full - clean):.1%}" if loops and full > clean else "n/a"  # no loop: no overhead


lines = ["| model | family | limit | cut at repeats | degenerate (full) | seconds full / stop / clean | overhead removed (time) "
         "| decode steps full / stop / clean | overhead removed (steps) | label agreement | cut rows | missed / extra |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]


def measure(which: str, family: str) -> int:
    """Add `family`'s rows to the table; returns how many pages it generated for."""
    cfg, model, processor, held = (toy_looper if which == "looper" else toy_sft)(family)
    images = [d.load_image() for d in held]
    rule = {k: cfg.generation.loop_rule[k] for k in ("tail_chars", "min_repeats")}  # the rule itself
    batches = contiguous(len(images), args.batch_size)
    for limit in args.limits:
        full_gen = OmegaConf.merge(cfg.generation, {"max_new_tokens": limit, "loop_stop": False})
        modes = {"full": (full_gen, batches)}
        modes |= {k: (OmegaConf.merge(full_gen, {"loop_stop": True, "loop_rule": {"min_repeats": k, **OVERRIDES}}), batches)
                  for k in args.stop_repeats}
        best, outs = {}, {}
        for _ in range(args.repeats):  # the modes interleaved, so drift and warm-up hit them alike
            for mode in ["full", "clean", *args.stop_repeats]:
                if mode == "clean" and mode not in modes:  # the same batches without full's loops
                    label_full = [is_degenerate(o.text, o.hit_limit, **rule) for o in outs["full"]]
                    modes["clean"] = (full_gen, [[i for i in rows if not label_full[i]] for rows in batches])
                gen, rows = modes[mode]
                t = {}
                with timer(t, "s"):
                    outs[mode] = generate_batches(cfg, model, processor, images, rows, gen)
                best[mode] = min(best.get(mode, float("inf")), t["s"])
        steps = {m: decode_steps(outs[m], rows) for m, (_, rows) in modes.items()}
        for k in args.stop_repeats:
            label_stop = [o.loop_stopped or is_degenerate(o.text, o.hit_limit, **rule) for o in outs[k]]
            agree = sum(a == b for a, b in zip(label_full, label_stop)) / len(images)
            missed = sum(a and not b for a, b in zip(label_full, label_stop))
            extra = sum(b and not a for a, b in zip(label_full, label_stop))
            lines.append(
                f"| {which} | {family} | {limit} | {k} | {sum(label_full)}/{len(images)} | {best['full']:.2f} / {best[k]:.2f} / "
                f"{best['clean']:.2f} | {share(best['full'], best[k], best['clean'], any(label_full))} | {steps['full']} / {steps[k]} / "
                f"{steps['clean']} | {share(steps['full'], steps[k], steps['clean'], any(label_full))} | {agree:.2%} | "
                f"{sum(o.loop_stopped for o in outs[k])} | {missed} / {extra} |")
            print(lines[-1], flush=True)
    return len(images)


pages = {measure(which, family) for which in args.models for family in args.families}
models = " and ".join({"looper": "looping organisms", "sft": "toy SFT models"}[m] for m in args.models)
rule = OmegaConf.to_container(compose(["experiment=toy"]).generation.loop_rule, resolve=True)
rule |= OVERRIDES
emit(f"Loop-aware stopping: {models}, {'/'.join(map(str, sorted(pages)))} held-out pages, batch {args.batch_size}, {n_threads} threads, "
     f"best of {args.repeats}", [f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}, "
                                 f"{time.perf_counter() - started:.0f} s in all; LoopStop's rule: {rule} (min_repeats: the "
                                 "`cut at repeats` column).\n", *lines], args.out)
