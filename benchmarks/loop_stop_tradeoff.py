"""The trade-off of loop-aware stopping: how much of the loop overhead a LoopStop setting removes
against how many outputs that end on their own it would cut, for many settings at once, chosen
on validation pages (never held-out ones). Every output is generated or written once, then each
setting's decision is replayed on it token by token, as LoopStop takes it during generation
(LoopStop.loop_at finds the loop, loopstop.confirmed decides), so settings cost no generation.

  loops    each family's looping organism (common.toy_looper) on its 32 validation pages and
           --fresh-pages more of the synthetic stream that no split uses (pages n_docs + eval_only
           on: never trained on, never evaluated), greedy, batch 8, at --gen-budget; a smaller
           budget's outputs are their prefixes (the same batches take the same steps). Savings in decoding steps (each batch runs until
           its longest row ends), as benchmarks/loop_stop.py counts them: full (every row to its
           end or the limit), stop (rows cut where the setting cuts), clean (the batches without
           the rows full-length generation labels degenerate); removed = (full - stop) / (full -
           clean). Label agreement: cut, or the paper's rule, against the full-length labels.
  ended    outputs that end on their own (end-of-turn token within the budget): the tables of
           identical rows of benchmarks/loop_stop_fp.py (ledger, form, contents, zeros; --rows),
           the synthetic pages' repeated bodies (table / ledger / form rows, documents/synthetic.py
           repeated_body) at the toy, grid and A4 widths, and every toy-sweep output that ended
           (results/toy/runs). A cut of one is a false cut.

Settings: LoopStop's min_copies (the loop's pattern repeated that many times), the older min_run
(the loop spans that share of the budget; min_copies 0), the line rule on top of min_copies 56
(an in-line run of one pattern longer than max_lines x what a line of its page holds: 16
characters on the toy's pages, their own width for the tables and repeated bodies), and vLLM's
repetition rule used as the cut itself (the last tokens one pattern of 1-64 tokens repeated n
times back to back).

    python benchmarks/loop_stop_tradeoff.py --threads 1 --out results/benchmarks/loop_stop_tradeoff.md
"""
import random
import time
from datetime import datetime, timezone
import platform

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from common import TABLE_COLS, contiguous, emit, generate_batches, parser, setup, tables, threads, toy_looper, toy_outputs
from degenbench.decoding.loopstop import LoopStop, confirmed, inline_limit, inline_run, run_tokens, text_lengths
from degenbench.documents import synthetic, truth_json
from degenbench.metrics.degeneration import is_degenerate
from degenbench.models.arch import adapter

p = parser(__doc__)
p.add_argument("--families", nargs="+", default=["qwen2.5-vl-3b", "qwen2.5-vl-7b", "nanonets-ocr2-3b",
                                                "olmocr-2-7b", "gemma-3-4b"])
p.add_argument("--budgets", type=int, nargs="+", default=None,
               help="budgets to score at (default: 4x the longest validation answer, 512, 640, 768, 1024, 4096); loops only "
                    "up to --gen-budget, ended outputs at all")
p.add_argument("--gen-budget", type=int, default=1024, help="the budget the loops are generated at")
p.add_argument("--fresh-pages", type=int, default=96, help="unused stream pages added to the validation pages")
p.add_argument("--min-copies", type=int, nargs="+", default=[0, 16, 32, 48, 56, 64, 80, 96, 128])
p.add_argument("--min-runs", type=float, nargs="+", default=[0.25, 0.5], help="the older rule's settings")
p.add_argument("--max-lines", type=float, nargs="+", default=[1, 1.5, 2, 3, 4],
               help="the line rule's settings, each with min_copies 56")
p.add_argument("--vllm-counts", type=int, nargs="+", default=[16, 32, 64])
p.add_argument("--rows", type=int, nargs="+", default=[2, 4, 8, 16, 24, 32, 48, 56, 64, 96])
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--threads", type=int, default=None)
p.add_argument("--out", default=None, help="also write the table here, and its figure beside it (.png)")
args = setup(p.parse_args())
if args.smoke:  # debug=smoke's looper on its few validation pages, short budgets, a few settings and tables
    args.families, args.fresh_pages, args.gen_budget, args.budgets = args.families[:1], 2, 64, [48, 64]
    args.min_copies, args.min_runs, args.vllm_counts, args.rows, args.batch_size = [0, 56], [0.5], [16], [2, 48], 2
    args.max_lines = [2]
n_threads = threads(args.threads)
started = time.perf_counter()
SETTINGS = ([("loopstop", c, 0.0) for c in args.min_copies] + [("loopstop", 0, r) for r in args.min_runs]
            + [("line", m, 56) for m in args.max_lines] + [("vllm", n, None) for n in args.vllm_counts])


def name(s) -> str:
    kind, n, run = s
    if kind == "vllm":
        return f"vLLM pattern x{n}"
    if kind == "line":
        return f"line x{n:g} + min_copies {run}"
    return "tail test alone" if not n and not run else f"min_run {run}" if run else f"min_copies {n}"


class Replay:
    """One output's trace: the loop LoopStop sees after each token, to score every setting on."""

    def __init__(self, tok, ids: list[int], ended: bool, line_chars: int):
        self.ids, self.ended, self.line_chars, self.line_cuts = ids, ended, line_chars, {}
        self.lengths = text_lengths(tok, ids)
        self.text = tok.decode(ids, skip_special_tokens=True)
        tracker, self.loops = LoopStop(tok, 0, set()), []
        last = len(ids) - 1 if ended else len(ids)  # the end-of-turn token itself is never checked
        for k in range(1, last + 1):
            period, onset = tracker.loop_at(0, self.text[:self.lengths[k - 1]])
            if period is not None:
                self.loops.append((k, period, onset))
        arr = np.asarray(ids)
        self.runs = {}  # q -> trailing run, after each token, of tokens equal to the one q before
        for q in range(1, 65):
            same = np.zeros(len(arr), dtype=bool)
            same[q:] = arr[q:] == arr[:-q]
            idx = np.arange(len(arr))
            last_break = np.maximum.accumulate(np.where(same, -1, idx))
            self.runs[q] = idx - last_break

    def cut(self, setting, budget: int):
        """The number of tokens at which `setting` cuts this output within `budget`, or None."""
        kind, n, run = setting
        top = min(len(self.ids) - (1 if self.ended else 0), budget)
        if kind == "vllm":
            hits = [k for q, r in self.runs.items() for k in np.nonzero(r[:top] >= (n - 1) * q)[0][:1] + 1]
            return min(hits, default=None)
        if kind == "line":
            cuts = [c for c in (self.line_cut(n, top), self.cut(("loopstop", run, 0.0), budget)) if c is not None]
            return min(cuts, default=None)
        for k, period, onset in self.loops:
            if k > top:
                return None
            text_len = self.lengths[k - 1]
            if confirmed(self.text[:text_len], self.lengths[:k], period, onset, n, run_tokens(run, budget)):
                return k
        return None


    def line_cut(self, max_lines: float, top: int):
        """The first token count, up to `top`, at which the text ends in an in-line run longer than
        max_lines of its page's lines (the whole output is searched once per setting)."""
        if max_lines not in self.line_cuts:
            limit, last = inline_limit(self.line_chars, max_lines), len(self.ids) - (1 if self.ended else 0)
            self.line_cuts[max_lines] = next((k for k in range(1, last + 1) if inline_run(
                self.text[max(0, self.lengths[k - 1] - limit - 1):self.lengths[k - 1]], limit)), None)
        k = self.line_cuts[max_lines]
        return k if k is not None and k <= top else None


def repeated_bodies(seed: int = 0) -> list[tuple[int, str]]:
    """(page width, JSON answer) of pages whose body rows all repeat (documents/synthetic.repeated_body)
    at the toy, grid and A4 widths, 2 to 48 rows."""
    out = []
    for width, cols in ((10, 16), (17, 24), (55, 64)):
        for lines in (2, 4, 8, 16, 32, 48):
            for j in range(4):
                rng = random.Random(f"tradeoff:{seed}:{width}:{lines}:{j}")
                f = synthetic.sample_fields(rng, cols, cols - width - 1, 2)
                out.append((cols, truth_json(f | {"text": synthetic.repeated_body(rng, width, lines)})))
    return out


# the looping organisms' validation outputs, generated once at the largest budget
loops, longest, gen_seconds = {}, 0, 0.0
for family in args.families:
    cfg, model, processor, docs = toy_looper(family, pages="validation")
    d = cfg.data
    docs = docs + synthetic.generate(args.fresh_pages, d.seed, cols=d.cols, margin_cols=d.margin_cols,
                                     body_lines=d.body_lines, cell=d.cell, repetitive=d.repetitive,
                                     first=d.n_docs + (d.get("eval_only") or 0))
    tok = processor.tokenizer
    longest = max([longest] + [len(tok(x.answer, add_special_tokens=False).input_ids) + 1 for x in docs])
    loops[family] = (cfg, tok, docs, model, processor)
budgets = args.budgets or [4 * longest, 512, 640, 768, 1024, 4096]
top = args.gen_budget
replays, ended_replays = {}, {}
toy = toy_outputs(8 if args.smoke else None)
bodies, table_rows = repeated_bodies()[:4 if args.smoke else None], tables(args.rows)
for family, (cfg, tok, docs, model, processor) in loops.items():
    t = time.perf_counter()
    gen = OmegaConf.merge(cfg.generation, {"max_new_tokens": top, "loop_stop": False})
    outs = generate_batches(cfg, model, processor, [d.load_image() for d in docs],
                            contiguous(len(docs), args.batch_size), gen)
    gen_seconds += time.perf_counter() - t
    replays[family] = [Replay(tok, o.token_ids, not o.hit_limit, cfg.data.cols) for o in outs]
    end = tok.convert_tokens_to_ids(adapter(cfg.family).special_tokens["eos"])  # the end of a turn
    enc = lambda t: tok(t, add_special_tokens=False).input_ids + [end]  # noqa: E731
    ended_replays[family] = {"tables": [(n, Replay(tok, enc(t), True, TABLE_COLS)) for _, n, t in table_rows],
                             "repeated bodies": [(None, Replay(tok, enc(t), True, c)) for c, t in bodies],
                             "toy outputs": [(None, Replay(tok, enc(t), True, cfg.data.cols))
                                             for t in toy.get(family, [])]}
    print(family, "replays ready", f"{time.perf_counter() - started:.0f}s", flush=True)


def steps(rows_steps, batches) -> int:
    return sum(max((rows_steps[i] for i in rows), default=0) for rows in batches)


def score(setting, budget: int) -> dict:
    """Savings and agreement on the loops, false cuts on the ended outputs, pooled over families."""
    out = {"removed": float("nan"), "worst family": float("nan")} if budget > top else score_loops(setting, budget)
    for source in ("tables", "repeated bodies", "toy outputs"):
        fits = [(n, r) for fam in ended_replays.values() for n, r in fam[source] if len(r.ids) <= budget]
        cut = [(n, r) for n, r in fits if r.cut(setting, budget) is not None]
        out[source] = f"{len(cut)} / {len(fits)}"
        if source == "tables":  # 48 identical rows a page must keep (issue 32); more are measured, not required
            out["tables of <= 48 rows cut"] = sum(n <= 48 for n, _ in cut)
            out["table rows never cut"] = min([n for n, _ in cut], default=None)
    return out


def score_loops(setting, budget: int) -> dict:
    full = stop = clean = agree = pages = missed = extra = degenerate = 0
    per_family = []
    for family, reps in replays.items():
        batches = contiguous(len(reps), args.batch_size)
        n_at = [min(len(r.ids), budget) for r in reps]
        hit = [not (r.ended and len(r.ids) <= budget) for r in reps]
        label = [h and is_degenerate(r.text[:r.lengths[n - 1]], True) for r, n, h in zip(reps, n_at, hit)]
        cuts = [r.cut(setting, budget) for r in reps]
        f = steps(n_at, batches)
        s = steps([c if c is not None else n for c, n in zip(cuts, n_at)], batches)
        c = steps([0 if lab else n for lab, n in zip(label, n_at)], batches)
        full, stop, clean = full + f, stop + s, clean + c
        per_family.append((f - s) / (f - c) if f > c else float("nan"))
        stop_label = [cut is not None or lab for cut, lab in zip(cuts, label)]
        agree += sum(a == b for a, b in zip(label, stop_label))
        missed += sum(a and not b for a, b in zip(label, stop_label))
        extra += sum(b and not a for a, b in zip(label, stop_label))
        pages, degenerate = pages + len(reps), degenerate + sum(label)
    out = {"removed": (full - stop) / (full - clean) if full > clean else float("nan"),
           "worst family": np.nanmin(per_family), "full/stop/clean": f"{full} / {stop} / {clean}",
           "degenerate": f"{degenerate}/{pages}", "agreement": agree / pages, "missed/extra": f"{missed} / {extra}"}
    return out


rows = []
for budget in budgets:
    for setting in SETTINGS:
        rows.append({"setting": name(setting), "budget": budget, **score(setting, budget)})
        print(rows[-1], flush=True)
lines = [f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()} ({platform.processor() or platform.machine()}), "
         f"{n_threads} thread(s); generation {gen_seconds:.0f} s, everything {time.perf_counter() - started:.0f} s. "
         f"Loops: {', '.join(loops)} looping organisms, each on its validation pages and {args.fresh_pages} unused stream pages "
         f"({len(next(iter(replays.values())))} pages), generated at {top} tokens (larger budgets: false cuts only); "
         f"the longest validation answer is {longest} tokens (4x: {4 * longest}). Ended outputs: "
         f"{len(table_rows)} tables ({'/'.join(map(str, args.rows))} identical rows), {len(bodies)} repeated bodies and the "
         "toy sweep's ended outputs, per family (a budget counts those that fit in it).\n",
         "`removed`: the loop overhead removed in decoding steps, pooled over families (`worst family`: the "
         "smallest family's); `agreement`: stop labels against full-length ones; false cuts: cut / fitting outputs; "
         "`table rows never cut`: the fewest identical rows among cut tables (blank: none cut); tables of more than 48 "
         "rows are measured, not required to be left alone.\n"]
df = pd.DataFrame(rows)


def figure(df: pd.DataFrame, path: str) -> None:
    """Each rule's setting against the loop overhead removed at each generated budget (top) and
    against the cuts of outputs that end (bottom; at the largest budget, where all fit): min_copies
    (left) and the line rule's max_lines on top of min_copies 56 (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4))
    for col, (prefix, label) in enumerate((("min_copies", "min_copies"), ("line x", "max_lines (x the page's line)"))):
        d = df[df.setting.str.startswith(prefix)]
        d = d.assign(x=d.setting.str.extract(r"^(?:min_copies |line x)([\d.]+)")[0].astype(float))
        top_ax, bottom = axes[0, col], axes[1, col]
        for budget, b in d[d.budget <= top].groupby("budget"):
            top_ax.plot(b.x, 100 * b.removed, marker="o", label=f"{budget} tokens")
        top_ax.axhline(90, color="grey", lw=0.8, ls="--")
        top_ax.set(xlabel=label, ylabel="loop overhead removed (%, steps)", title=f"{label.split(' (')[0]}: savings (validation loops)")
        top_ax.legend(fontsize=7)
        last = d[d.budget == max(budgets)]
        cut = lambda col_: [int(v.split(" / ")[0]) for v in last[col_]]  # noqa: E731
        bottom.plot(last.x, last["tables of <= 48 rows cut"], marker="o", label="tables of <= 48 identical rows")
        bottom.plot(last.x, [a - k for a, k in zip(cut("tables"), last["tables of <= 48 rows cut"])], marker="o",
                    ls=":", label="tables of 56-96 rows (not required)")
        bottom.plot(last.x, cut("repeated bodies"), marker="o", label="repeated bodies (<= 48 rows)")
        bottom.plot(last.x, cut("toy outputs"), marker="o", ls="--", label="toy outputs that ended")
        bottom.set(xlabel=label, ylabel=f"outputs that end, cut (at {max(budgets)})", title="cuts of outputs that end")
        bottom.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if args.out:
    figure(df, str(args.out).rsplit(".", 1)[0] + ".png")
for col in ("removed", "worst family", "agreement"):
    df[col] = df[col].map(lambda v: "n/a" if v != v else f"{v:.1%}" if col != "agreement" else f"{v:.2%}")
df["table rows never cut"] = df["table rows never cut"].map(lambda v: "" if v is None or v != v else f"< {int(v)}")
df = df.fillna("n/a")
lines.append(df.to_markdown(index=False))
emit("LoopStop's trade-off: loop overhead removed against false cuts, on validation pages", lines, args.out)
