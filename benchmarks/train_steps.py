"""(d) SFT and DPO training speed and peak memory: LoRA (DPO's reference is the frozen SFT adapter,
no second model) against full fine-tuning (DPO loads a reference copy), on a family's tiny
stand-in with the toy sweep's data and pairs. Each configuration trains in its own process, so
its peak resident memory is its own.

    python benchmarks/train_steps.py --family qwen2.5-vl-3b --steps 16 --out results/benchmarks/train_steps.md
"""
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RUN, emit, parser, setup, store


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def child(family: str, stage: str, method: str, steps: int, out: str, sft_dir: str) -> dict:
    """Train one configuration: its facts."""
    from degenbench.config import compose
    from degenbench.documents import load_split
    from degenbench.stages.graph import Keys, run_job
    from degenbench.stages.store import is_complete

    where = [f"paths.results_dir={store()}", *RUN["overrides"]]
    cfg = compose(["experiment=toy", f"family={family}", "logger=disabled", *where, f"sft.method={method}",
                   f"sft.trainer.max_steps={steps}", f"dpo.trainer.max_steps={steps}", "dpo.trainer.logging_steps=1",
                   "sft.trainer.logging_steps=1"])
    before = rss_mb()
    if stage == "sft":
        from degenbench.stages.sft import train_sft

        train = load_split(cfg.data, cfg.seed).train
        facts = train_sft(cfg, train, Path(out))
    else:
        from degenbench.stages.dpo import train_dpo

        toy = compose(["experiment=toy", f"family={family}", "logger=disabled", *where, "stage=dpo", "dpo.beta=0.1"])
        pairs = Path(toy.paths.artifacts_dir) / "pairs" / f"{family}-{Keys(toy).pairs}"
        if not is_complete(pairs):  # the toy sweep's pairs of this family: build them if missing
            run_job(toy)
        facts = train_dpo(cfg, Path(sft_dir), pairs, Path(out))
    end = facts["log_history"][-1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"stage": stage, "method": method, "steps": facts["steps"], "steps_per_s": end["train_steps_per_second"],
            "seconds": end["train_runtime"], "rss_before_mb": before, "peak_rss_mb": peak}


def main():
    p = parser(__doc__)
    p.add_argument("--family", default="qwen2.5-vl-3b")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--out", default=None)
    p.add_argument("--child", nargs=4, metavar=("STAGE", "METHOD", "OUT", "SFT_DIR"), help="(internal)")
    args = setup(p.parse_args())
    if args.child:
        return print(json.dumps(child(args.family, *args.child[:2], args.steps, *args.child[2:])), flush=True)
    if args.smoke:
        args.steps = 1
    rows, tmp = [], Path(tempfile.mkdtemp(prefix="train-steps-"))
    for method in ("lora", "full"):
        for stage in ("sft", "dpo"):
            out = tmp / f"{stage}-{method}"
            out.mkdir()
            if args.smoke:  # in this process: its memory figures mean nothing, the code path is the same
                rows.append(child(args.family, stage, method, args.steps, str(out), str(tmp / f"sft-{method}")))
                continue
            cmd = [sys.executable, __file__, "--family", args.family, "--steps", str(args.steps),
                   "--results-dir", str(store()), "--child", stage, method, str(out), str(tmp / f"sft-{method}")]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"{stage}/{method} failed:\n{res.stderr[-3000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    lines = ["| stage | method | steps/s | seconds | RSS before training (MB) | peak RSS (MB) | peak - before (MB) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['method']} | {r['steps_per_s']:.2f} | {r['seconds']:.1f} | "
                     f"{r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['rss_before_mb']:.0f} |")
    emit(f"Training speed and memory: {args.family} tiny stand-in, {args.steps} steps each, toy data and pairs",
         lines, args.out)


if __name__ == "__main__":
    main()
