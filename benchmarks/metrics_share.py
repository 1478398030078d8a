"""(c) Metric and detector time as a share of generation time: the evaluation of the toy held-out
pages with the toy sweep's SFT model of a family, timed in its two parts: generation, and scoring
(every per-document metric; of which the degeneration detector: the rule and loop period/onset).
Also the on-the-fly detector, LoopStop: its own time in a generation pass with loop stopping on
but a threshold no row meets (so the outputs are those of full-length generation).

    python benchmarks/metrics_share.py --family olmocr-2-7b --out results/benchmarks/metrics_share.md
"""
import time

from omegaconf import OmegaConf

import degenbench.decoding.generate as generation
from common import contiguous, emit, generate_batches, parser, setup, threads, timer, toy_sft
from degenbench.metrics import score_output, settings
from degenbench.metrics.degeneration import is_degenerate, loop_period_onset

p = parser(__doc__)
p.add_argument("--family", default="olmocr-2-7b")
p.add_argument("--threads", type=int, default=None)
p.add_argument("--out", default=None)
args = setup(p.parse_args())
if args.smoke:
    args.family = "qwen2.5-vl-3b"
n_threads = threads(args.threads)
cfg, model, processor, held = toy_sft(args.family)
bs, m, t = cfg.generation.batch_size, settings(cfg.metrics), {}  # as evaluate.py reads them
images = [d.load_image() for d in held]
with timer(t, "generate"):
    outs = generate_batches(cfg, model, processor, images, contiguous(len(images), bs), cfg.generation)
with timer(t, "metrics"):
    scored = [score_output(d, o.text, o.hit_limit, o.token_ids, m, o.loop_stopped) for d, o in zip(held, outs)]
with timer(t, "detector"):
    for o in outs:
        is_degenerate(o.text, o.hit_limit, m.tail_chars, m.min_repeats)
        loop_period_onset(o.text, m.max_period)
total = t["generate"] + t["metrics"]


class TimedLoopStop(generation.LoopStop):
    seconds = 0.0

    def __call__(self, *a, **kw):
        start = time.perf_counter()
        try:
            return super().__call__(*a, **kw)
        finally:
            TimedLoopStop.seconds += time.perf_counter() - start


original, generation.LoopStop = generation.LoopStop, TimedLoopStop  # generate() builds its criterion from the module's name
never = OmegaConf.merge(cfg.generation, {"loop_stop": True, "loop_rule": {"min_repeats": 10**6}})
try:
    with timer(t, "generate_stop"):
        generate_batches(cfg, model, processor, images, contiguous(len(images), bs), never)
finally:  # the tests run this script in their own process: leave generate() as it was
    generation.LoopStop = original
emit(f"Metric and detector time: {args.family} (toy SFT model), {len(held)} held-out pages, {n_threads} threads", [
    "| part | seconds | share of evaluation | per page |", "|---|---|---|---|",
    f"| generation | {t['generate']:.2f} | {t['generate'] / total:.2%} | {1e3 * t['generate'] / len(held):.1f} ms |",
    f"| all metrics (incl. detector) | {t['metrics']:.3f} | {t['metrics'] / total:.2%} | {1e3 * t['metrics'] / len(held):.2f} ms |",
    f"| detector alone (rule, loop period/onset) | {t['detector']:.3f} | {t['detector'] / total:.2%} | {1e3 * t['detector'] / len(held):.2f} ms |",
    "", f"{sum(s['degenerate'] for s in scored)} of {len(held)} outputs degenerate.", "",
    f"LoopStop (checking every row at every step, cutting none): {TimedLoopStop.seconds:.3f} s of a "
    f"{t['generate_stop']:.2f} s generation pass, {TimedLoopStop.seconds / t['generate_stop']:.1%}."], args.out)
