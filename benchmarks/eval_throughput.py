"""(b) Evaluation throughput against batch size: greedy generation over held-out pages with the toy
sweep's SFT model of a family, full length and with loop-aware stopping, at each batch size.
A loop holds its batch to the token limit, so large batches of a looping model gain less.

    python benchmarks/eval_throughput.py --family olmocr-2-7b --pages 128 --out results/benchmarks/eval_throughput.md
"""
from omegaconf import OmegaConf

from common import contiguous, emit, generate_batches, parser, setup, threads, timer, toy_sft

p = parser(__doc__)
p.add_argument("--family", default="olmocr-2-7b")
p.add_argument("--pages", type=int, default=128)
p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
p.add_argument("--threads", type=int, default=None)
p.add_argument("--out", default=None)
args = setup(p.parse_args())
if args.smoke:
    args.family, args.pages, args.batch_sizes = "qwen2.5-vl-3b", 4, [1, 4]
n_threads = threads(args.threads)
cfg, model, processor, held = toy_sft(args.family)
images = [d.load_image() for d in held[:args.pages]]
lines = ["| batch | pages/s full | tokens/s full | pages/s loop-stop | tokens/s loop-stop | speed-up of stopping |",
         "|---|---|---|---|---|---|"]
for bs in args.batch_sizes:
    row = {}
    for mode in ("full", "stop"):
        gen = OmegaConf.merge(cfg.generation, {"loop_stop": mode == "stop"})
        with timer(row, mode):
            outs = generate_batches(cfg, model, processor, images, contiguous(len(images), bs), gen)
        row[mode + "_tok"] = sum(o.new_tokens for o in outs)
    lines.append(f"| {bs} | {len(images) / row['full']:.1f} | {row['full_tok'] / row['full']:.0f} | "
                 f"{len(images) / row['stop']:.1f} | {row['stop_tok'] / row['stop']:.0f} | "
                 f"{row['full'] / row['stop']:.2f}x |")
    print(lines[-1], flush=True)
emit(f"Evaluation throughput: {args.family} (toy SFT model), {len(images)} held-out pages, "
     f"{cfg.generation.max_new_tokens} new tokens at most, {n_threads} threads", lines, args.out)
