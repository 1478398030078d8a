"""Per-document drill-down: the worst loops, and the pages they came from."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from degenbench.analysis.figures import label, plt, style
from degenbench.documents import load_split


def worst_loops(predictions: pd.DataFrame, k: int = 6) -> pd.DataFrame:
    """The k degenerate outputs with the highest CER (ties: the earliest loop onset first)."""
    loops = predictions[predictions.degenerate]
    return loops.sort_values(["cer", "loop_onset"], ascending=[False, True]).head(k).reset_index(drop=True)


def pages(run_dir: str | Path, doc_ids: list[str]) -> dict:
    """The page images of `doc_ids` as the run saw them, rebuilt from the run's own config (the
    synthetic source is seeded; a manifest or HF source is read again from its path)."""
    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    train, _, held = load_split(cfg.data, cfg.seed)
    by_id = {d.id: d for d in held}
    missing = [i for i in doc_ids if i not in by_id]
    if missing:
        raise KeyError(f"{len(missing)} documents are not held-out pages of {run_dir}: {missing[:5]}")
    return {i: by_id[i].load_image() for i in doc_ids}


def show_loops(rows: pd.DataFrame, runs: pd.DataFrame, chars: int = 160):
    """One row per loop: the page on the left, the truth and the model's output on the right."""
    run_dirs = runs.set_index("run_id").run_dir
    images = {(rid, d): im for rid, g in rows.groupby("run_id")  # each run's pages rebuilt once
              for d, im in pages(run_dirs[rid], list(g.doc_id)).items()}
    with style():
        fig, axes = plt.subplots(len(rows), 2, figsize=(8.0, 1.15 * len(rows)), squeeze=False,
                                 gridspec_kw={"width_ratios": [1, 1.5]})
        for (a_img, a_txt), r in zip(axes, rows.itertuples()):
            a_img.imshow(images[r.run_id, r.doc_id])
            a_img.set_axis_off()
            beta = f" β={r.beta:g}" if pd.notna(r.beta) else ""
            a_img.set_title(f"{label(r.family)} {r.stage}{beta} · {r.doc_id}", fontsize=7, loc="left")
            cut = lambda t: t[:chars] + ("…" if len(t) > chars else "")  # noqa: E731
            head = (f"output (CER {r.cer:.2f}, {r.new_tokens} tokens, loop period {r.loop_period:.0f}, "
                    f"from character {r.loop_onset:.0f}): ")
            text = "\n".join(textwrap.wrap("truth: " + cut(r.truth), 80)) + "\n\n" + \
                "\n".join(textwrap.wrap(head + cut(r.prediction), 80))
            a_txt.text(0, 1, text, va="top", fontsize=6, family="monospace", transform=a_txt.transAxes)
            a_txt.set_axis_off()
        fig.tight_layout()
    return fig
