"""(a) Loop-aware stopping on a model that loops: batched greedy generation over the toy held-out
pages with the toy sweep's SFT model, generated three ways in one run:
  full   every row runs until it ends or hits the token limit (evaluation's default)
  stop   LoopStop cuts a row once its tail repeats (it counts as degenerate): at the rule's 4
         repeats, and at stricter thresholds (--stop-repeats), trading savings for agreement
  clean  the same batches without the rows `full` labels degenerate: what the pages cost without loops
The degeneration overhead is full - clean; stopping removes (full - stop) / (full - clean) of it.
Label agreement: the stop labels (cut, or the paper's rule) against the full-length labels.

    python benchmarks/loop_stop.py --family olmocr-2-7b --limits 160 512 --out results/benchmarks/loop_stop.md
"""
import argparse
from omegaconf import OmegaConf

from common import contiguous, emit, generate_batches, threads, timer, toy_sft
from degenbench.metrics.degeneration import is_degenerate

p = argparse.ArgumentParser()
p.add_argument("--family", default="olmocr-2-7b")
p.add_argument("--limits", type=int, nargs="+", default=[160, 512], help="max_new_tokens to measure at")
p.add_argument("--stop-repeats", type=int, nargs="+", default=[4, 8, 16],
               help="tail repeats at which LoopStop cuts (4: the rule itself)")
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--repeats", type=int, default=3, help="timed passes per mode; the fastest is kept")
p.add_argument("--threads", type=int, default=None)
p.add_argument("--out", default=None, help="also write the results here (Markdown, with the command)")
args = p.parse_args()
n_threads = threads(args.threads)
cfg, model, processor, held = toy_sft(args.family)
images = [d.load_image() for d in held]
rule = dict(cfg.generation.loop_rule)
batches = contiguous(len(images), args.batch_size)


def run(gen, rows_per_batch):
    """Outputs of every batch, and the fastest of `repeats` timed passes."""
    best, outs = float("inf"), None
    for _ in range(args.repeats):
        t = {}
        with timer(t, "s"):
            o = generate_batches(cfg, model, processor, images, rows_per_batch, gen)
        best, outs = min(best, t["s"]), o
    return outs, best


lines = ["| limit | cut at repeats | degenerate (full) | seconds full / stop / clean | tokens full / stop / clean | overhead removed | label agreement | cut rows | missed / extra |",
         "|---|---|---|---|---|---|---|---|---|"]
for limit in args.limits:
    full_gen = OmegaConf.merge(cfg.generation, {"max_new_tokens": limit, "loop_stop": False})
    full, t_full = run(full_gen, batches)
    label_full = [is_degenerate(o.text, o.hit_limit, **rule) for o in full]
    clean_batches = [[i for i in rows if not label_full[i]] for rows in batches]
    clean, t_clean = run(full_gen, clean_batches)
    for repeats in args.stop_repeats:
        stop_gen = OmegaConf.merge(full_gen, {"loop_stop": True, "loop_rule": {"min_repeats": repeats}})
        stop, t_stop = run(stop_gen, batches)
        label_stop = [o.loop_stopped or is_degenerate(o.text, o.hit_limit, **rule) for o in stop]
        tok = [sum(o.new_tokens for o in x) for x in (full, stop, clean)]
        removed = (t_full - t_stop) / (t_full - t_clean) if t_full > t_clean else float("nan")
        agree = sum(a == b for a, b in zip(label_full, label_stop)) / len(images)
        missed = sum(a and not b for a, b in zip(label_full, label_stop))
        extra = sum(b and not a for a, b in zip(label_full, label_stop))
        lines.append(f"| {limit} | {repeats} | {sum(label_full)}/{len(images)} | {t_full:.2f} / {t_stop:.2f} / "
                     f"{t_clean:.2f} | {tok[0]} / {tok[1]} / {tok[2]} | {removed:.1%} | {agree:.2%} | "
                     f"{sum(o.loop_stopped for o in stop)} | {missed} / {extra} |")
        print(lines[-1], flush=True)
emit(f"Loop-aware stopping: {args.family} (toy SFT model), {len(images)} held-out pages, batch "
     f"{args.batch_size}, {n_threads} threads, best of {args.repeats}", lines, args.out)
