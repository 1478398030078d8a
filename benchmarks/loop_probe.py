"""Where does a reading model lose its place? The toy sweep's SFT model of each family, greedy, on
pages that differ from the toy's in one way each, at the toy budget and at k times it:

  toy        the toy's own held-out pages (40% of body lines repetitive)
  same-rows  the toy's pages with every body row replaced by one repetitive line, repeated
  tall       pages with more body rows than any page trained on (taller than the toy's)
  tall-same  taller pages whose body rows are all one repetitive line

Prints degenerate pages per kind and budget, and how many of the 1x loops persist at kx.
  python benchmarks/loop_probe.py --families qwen2.5-vl-3b --pages 32 --out results/benchmarks/loop_probe.md
"""
from __future__ import annotations

import random
from dataclasses import replace

from omegaconf import OmegaConf

from common import contiguous, emit, generate_batches, parser, setup, threads, toy_sft
from degenbench.documents.record import make_document
from degenbench.documents.synthetic import render, repetitive_line, sample_fields
from degenbench.decoding.generate import release
from degenbench.metrics import score_output, settings


def pages(cfg, kind: str, n: int, held: list, tall: int) -> list:
    """`n` pages of `kind`, seeded by their index (the same pages for every family)."""
    d = cfg.data
    if kind == "toy":
        return held[:n]
    rows = tall if kind.startswith("tall") else d.body_lines
    width = d.cols - d.margin_cols - 1
    out = []
    for i in range(n):
        rng = random.Random(f"degenbench-probe:{kind}:{i}")
        fields = sample_fields(rng, d.cols, d.margin_cols, rows, d.repetitive)
        if kind.endswith("same"):
            fields["text"] = "\n".join([repetitive_line(rng, width)] * rows)
        out.append(make_document(f"probe-{kind}-{i}", fields, None, where=f"probe {kind} {i}",
                                 image=render(fields, d.cols, d.margin_cols, rows, d.cell)))
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--families", nargs="+", default=["qwen2.5-vl-3b", "qwen2.5-vl-7b", "nanonets-ocr2-3b",
                                                      "olmocr-2-7b", "gemma-3-4b"])
    ap.add_argument("--kinds", nargs="+", default=["toy", "same-rows", "tall", "tall-same"])
    ap.add_argument("--pages", type=int, default=32)
    ap.add_argument("--tall", type=int, default=4, help="body rows of the tall pages (the toy's: 2)")
    ap.add_argument("--multiplier", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--overrides", nargs="*", default=[], help="config overrides of the toy SFT model, e.g. data.body_lines=6")
    ap.add_argument("--out", default=None)
    args = setup(ap.parse_args())
    if args.smoke:
        args.families, args.pages, args.multiplier = args.families[:1], 2, 2
    n_threads = threads(args.threads)
    lines = ["| family | kind | pages | degenerate at 1x | at kx | persist (1x and kx) | hit limit 1x | CER 1x (mean) |",
             "|---|---|---|---|---|---|---|---|"]
    examples = []
    for fam in args.families:
        cfg, model, processor, held = toy_sft(fam, args.overrides)
        metrics, budget = settings(cfg.metrics), cfg.generation.max_new_tokens
        for kind in args.kinds:
            docs = pages(cfg, kind, args.pages, held, args.tall)
            images = [d.load_image() for d in docs]
            scored = {}
            for k in (1, args.multiplier):
                gen = OmegaConf.merge(cfg.generation, {"max_new_tokens": budget * k})
                outs = generate_batches(cfg, model, processor, images, contiguous(len(docs), 16), gen)
                scored[k] = [score_output(d, o.text, o.hit_limit, o.token_ids, metrics, o.loop_stopped) | {"text": o.text, "hit": o.hit_limit}
                             for d, o in zip(docs, outs)]
            one, many = scored[1], scored[args.multiplier]
            deg1 = [i for i, s in enumerate(one) if s["degenerate"]]
            degk = [i for i, s in enumerate(many) if s["degenerate"]]
            cer = sum(s["cer"] for s in one) / len(one)
            lines.append(f"| {fam} | {kind} | {len(docs)} | {len(deg1)} | {len(degk)} | "
                         f"{len(set(deg1) & set(degk))}/{len(deg1)} | {sum(s['hit'] for s in one)} | {cer:.3f} |")
            print(lines[-1], flush=True)
            for i in degk[:2]:
                examples.append(f"- {fam} / {kind}: truth {docs[i].text!r}; at {budget * args.multiplier} tokens "
                                f"the output ends {many[i]['text'][-80:]!r}")
        release(model)
    emit(f"Where the toy SFT models lose their place: {args.pages} pages per kind, greedy, "
         f"{args.multiplier}x budget, {n_threads} threads", lines + ["", "Examples:", *examples], args.out)


if __name__ == "__main__":
    main()
