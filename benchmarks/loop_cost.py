"""Loop cost as DharmaOCR measures it (issue 32): what looping rows do to the healthy rows batched
with them. Per family's looping organism (common.toy_looper) and budget, greedy generation of the
held-out pages in fixed batches, twice:
  all    every page (the degenerate rows found by degenbench's rule, metrics.degeneration)
  clean  the same batches without their degenerate rows: the healthy pages alone
HF static batching (`--backend hf`): a batch decodes until its longest row ends and returns its rows
together, so a healthy row's latency is its batch's. Reported: batch wall time and decoding steps
(sum over batches of the longest row: deterministic) all against clean, as a slowdown (all / clean
- 1) and as loops' share of the time ((all - clean) / all: the paper's 42.47% is this share of 7.3
min against 4.2); per batch holding a loop, its healthy rows' latency against the same rows batched
alone (steps and seconds: min / median / max); and the step inflation computed for the paper's
2.42% looping share (analysis/batch_cost.at_share: computed, not measured).
`--backend vllm` (a GPU and vLLM): the same pages through degenbench's vLLM backend, continuous
batching with --batch-size sequences at once: wall time all against clean, and the healthy requests'
time to finish (from vLLM's per-request timestamps) with the loops running beside them against
without: every healthy request shares the engine with the loops, so all of them count.

    python benchmarks/loop_cost.py --limits 256 1024 --repeats 2 --threads 1 --out results/benchmarks/loop_cost.md
    python benchmarks/loop_cost.py --smoke   # debug=smoke models, one family, a few pages: the tests' run
"""
import statistics
import time

import pandas as pd
from omegaconf import OmegaConf

from common import contiguous, emit, generate_batches, parser, setup, threads, toy_looper, toy_looper_dir
from degenbench.analysis.batch_cost import PAPER, _pct, at_share, paper_line, static_cost
from degenbench.metrics.degeneration import is_degenerate

FAMILIES = ["nanonets-ocr2-3b", "qwen2.5-vl-3b", "qwen2.5-vl-7b", "olmocr-2-7b", "gemma-3-4b"]
p = parser(__doc__)
p.add_argument("--families", nargs="+", default=FAMILIES)
p.add_argument("--limits", type=int, nargs="+", default=[256, 1024], help="max_new_tokens to measure at")
p.add_argument("--pages", type=int, default=None, help="the first N held-out pages (default: all)")
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--repeats", type=int, default=1, help="timed passes per mode, interleaved; the fastest is kept")
p.add_argument("--backend", choices=["hf", "vllm"], default="hf")
p.add_argument("--threads", type=int, default=None)
p.add_argument("--out", default=None)
args = setup(p.parse_args())
if args.smoke:  # debug=smoke's models and pages (two training steps: they may not loop at all)
    args.families, args.limits, args.batch_size = args.families[:1], [32, 64], 2
n_threads = threads(args.threads)
HEAD = ["| family | limit | pages | looping rows | batches with a loop | decode steps all / clean | step slowdown "
        "| loops' share of steps | seconds all / clean | batch slowdown | loops' share of time | healthy rows in mixed batches "
        "| healthy latency, steps (min / median / max) | healthy latency, seconds (min / median / max) "
        f"| steps at {PAPER['share']:.2%} loops (computed) |", "|" + "---|" * 15]


def spread(xs) -> str:
    return " / ".join(_pct(x) for x in (min(xs), statistics.median(xs), max(xs))) if xs else "n/a"


def hf_row(family: str, model, processor, cfg, images, limit: int) -> str:
    gen = OmegaConf.merge(cfg.generation, {"max_new_tokens": limit, "loop_stop": False})
    rule = {k: cfg.generation.loop_rule[k] for k in ("tail_chars", "min_repeats")}
    batches = contiguous(len(images), args.batch_size)
    best, outs, plan = {}, {}, {"all": batches}
    for _ in range(args.repeats):  # interleaved, so drift and warm-up hit both alike
        for mode in ("all", "clean"):
            if mode not in plan:  # the same batches without the rows `all` labels degenerate
                deg = [is_degenerate(o.text, o.hit_limit, **rule) for o in outs["all"]]
                plan["clean"] = [[i for i in rows if not deg[i]] for rows in batches]
            start = time.perf_counter()
            got = generate_batches(cfg, model, processor, images, plan[mode], gen)
            wall = time.perf_counter() - start
            if wall < best.get(mode, float("inf")):
                best[mode], outs[mode] = wall, got
    # per batch: its generate seconds (each row carries an equal share) and steps, all and clean
    per, at_all, at_clean = [], 0, 0
    for rows, kept in zip(batches, plan["clean"]):
        a, c = outs["all"][at_all:at_all + len(rows)], outs["clean"][at_clean:at_clean + len(kept)]
        at_all, at_clean = at_all + len(rows), at_clean + len(kept)
        per.append({"loops": len(rows) - len(kept), "healthy": len(kept), "sec": sum(o.seconds for o in a),
                    "sec_clean": sum(o.seconds for o in c), "steps": max(o.new_tokens for o in a),
                    "steps_clean": max((o.new_tokens for o in c), default=0)})
    pred = pd.DataFrame({"batch": [b for b, rows in enumerate(batches) for _ in rows],
                         "new_tokens": [o.new_tokens for o in outs["all"]], "degenerate": deg})
    s = static_cost(pred)
    assert s["steps"] == sum(b["steps"] for b in per) and s["steps_clean"] == sum(b["steps_clean"] for b in per)
    mixed = [b for b in per if b["loops"] and b["healthy"]]
    lat_steps = [b["steps"] / b["steps_clean"] - 1 for b in mixed]
    lat_sec = [b["sec"] / b["sec_clean"] - 1 for b in mixed]
    t_all, t_clean = best["all"], best["clean"]
    return (f"| {family} | {limit} | {s['pages']} | {s['loops']} ({s['share']:.2%}) | {s['batches_with_loop']}/{s['batches']} "
            f"| {s['steps']} / {s['steps_clean']} | {_pct(s['step_inflation'])} | {s['loop_step_share']:.2%} "
            f"| {t_all:.2f} / {t_clean:.2f} | {_pct(t_all / t_clean - 1)} | {(t_all - t_clean) / t_all:.2%} "
            f"| {s['healthy_in_mixed']} | {spread(lat_steps)} | {spread(lat_sec)} | {_pct(s['at_paper_share'])} |")


def vllm_row(family: str, llm, processor, cfg, images, limit: int) -> str:
    """Continuous batching: all pages in one call, --batch-size sequences at once (max_num_seqs)."""
    from degenbench.decoding.vllm import generate

    gen = OmegaConf.merge(cfg.generation, {"max_new_tokens": limit, "loop_stop": False, "backend": "vllm"})
    rule = {k: cfg.generation.loop_rule[k] for k in ("tail_chars", "min_repeats")}
    timed = {}
    for mode in ("all", "clean"):
        pages = range(len(images)) if mode == "all" else [i for i in range(len(images)) if not deg[i]]
        seen = Recorder(llm)
        start = time.perf_counter()
        outs = generate(seen, processor, cfg.family, [images[i] for i in pages], gen)
        timed[mode] = (time.perf_counter() - start, dict(zip(pages, seen.finish_times())), outs)
        if mode == "all":
            deg = [is_degenerate(o.text, o.hit_limit, **rule) for o in outs]
    (t_all, fin_all, outs), (t_clean, fin_clean, _) = timed["all"], timed["clean"]
    healthy = [i for i in fin_clean if fin_all.get(i) and fin_clean[i]]
    lat = [fin_all[i] / fin_clean[i] - 1 for i in healthy]
    loops = sum(deg)
    return (f"| {family} | {limit} | {len(images)} | {loops} ({loops / len(images):.2%}) | - | - | - | - "
            f"| {t_all:.2f} / {t_clean:.2f} | {_pct(t_all / t_clean - 1)} | {(t_all - t_clean) / t_all:.2%} "
            f"| {len(healthy)} | - | {spread(lat)} | - |")


class Recorder:
    """The vLLM engine, keeping the RequestOutputs of its generate calls: their per-request
    timestamps (vLLM's RequestStateStats, with the engine's stats on) give each request's time to
    finish, which degenbench's backend does not return."""

    def __init__(self, llm):
        self.llm, self.results = llm, []

    def generate(self, *a, **kw):
        out = self.llm.generate(*a, **kw)
        self.results = self.results or out  # the first call: one result per page, in order
        return out

    def finish_times(self) -> list[float | None]:
        m = [getattr(r, "metrics", None) for r in self.results]
        if any(x is None or not getattr(x, "last_token_ts", 0) for x in m):
            return [None] * len(m)  # no timestamps in this vLLM: healthy latency stays n/a
        t0 = min(x.queued_ts or x.last_token_ts for x in m)
        return [x.last_token_ts - t0 for x in m]


def load(family: str):
    if args.backend == "hf":
        return toy_looper(family)
    from degenbench.decoding import vllm
    from degenbench.models.families import load_processor
    from degenbench.stages.training import MODEL_DIR

    if not vllm.available():
        raise SystemExit("--backend vllm needs vLLM and a GPU (pip install 'degenbench[vllm]' on a CUDA "
                         "machine); on this machine run --backend hf")
    cfg, out, held = toy_looper_dir(family)  # fully fine-tuned: weights vLLM loads as they are
    llm = vllm.load(cfg.family, out / MODEL_DIR, [cfg.generation], max_num_seqs=args.batch_size,
                    disable_log_stats=False)  # per-request timestamps
    return cfg, llm, load_processor(cfg.family), held


lines = [*HEAD]
started, pages = time.perf_counter(), set()
for family in args.families:
    cfg, model, processor, held = load(family)
    images = [d.load_image() for d in held[:args.pages]]
    pages.add(len(images))
    for limit in args.limits:
        lines.append((hf_row if args.backend == "hf" else vllm_row)(family, model, processor, cfg, images, limit))
        print(lines[-1], flush=True)
how = ("HF static batching" if args.backend == "hf" else f"vLLM continuous batching ({args.batch_size} sequences at once)")
lines += ["", f"Paper: {paper_line()}", "",
          f"Seconds: wall clock of generate, fastest of {args.repeats} interleaved pass(es), {n_threads} thread(s), "
          "on a shared machine (other jobs on its cores): steps are the deterministic measure. Healthy latency: "
          "per batch holding a loop, its healthy rows' time to finish against the same rows batched alone. "
          f"Run took {time.perf_counter() - started:.0f} s (models loaded or built included)."]
emit(f"Loop cost to healthy rows: looping organisms, {how}, {'/'.join(map(str, sorted(pages)))} held-out pages, "
     f"batch {args.batch_size}", lines, args.out)
