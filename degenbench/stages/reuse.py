"""Outputs an evaluation can take from a finished run instead of generating them again.

  same key     a run with the same evaluation key evaluated the same model on the same pages with
               the same decoding (a DPO job without pairs evaluates its SFT model: the SFT job's
               run, or another beta's): its per-page rows are the result, copied.
  k x budget   greedy decoding at k times the budget repeats the 1x output of every page that ended
               before the 1x limit (the same tokens, the same stop): only the pages that hit the
               limit, or were cut, are generated again (generation.reuse_budget).

Every reuse is recorded in the run's metrics.json (`reused`): the source run and how many pages
came from it. Reused rows keep their source's `seconds` and `batch`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from degenbench.stages.store import COMPLETE, is_complete

log = logging.getLogger(__name__)

def same_key(runs_dir: str | Path, key: str, run_dir: Path) -> Path | None:
    """A complete run other than `run_dir` whose evaluation key is `key`, if there is one."""
    for cand in sorted(Path(runs_dir).glob(f"*-{key}")):
        if cand != run_dir and is_complete(cand) and json.loads((cand / COMPLETE).read_text())["key"] == key:
            return cand
    return None


def rows(run_dir: Path) -> tuple[pd.DataFrame, dict]:
    """(per-page rows, metrics.json) of a finished run (write_run sets the id columns anew)."""
    return pd.read_parquet(run_dir / "predictions.parquet"), json.loads((run_dir / "metrics.json").read_text())


def unfinished(base_run: Path, doc_ids: list[str]) -> tuple[pd.DataFrame, set[str]]:
    """(rows of `base_run` to keep, ids of the documents to generate again): a page is kept where
    its 1x output ended on its own: it neither hit the limit nor was cut by loop-aware stopping.
    Documents the base run skipped or lacks are generated again (and skipped again if still bad)."""
    table, _ = rows(base_run)
    done = table[~table["hit_limit"].astype(bool) & ~table["loop_stopped"].astype(bool)]
    done = done[done["doc_id"].isin(doc_ids)]
    return done, set(doc_ids) - set(done["doc_id"])


def merge(kept: pd.DataFrame, made: pd.DataFrame, doc_ids: list[str]) -> pd.DataFrame:
    """Kept and new rows, in the documents' order."""
    frames = [f for f in (kept, made) if len(f)]
    if not frames:
        return made
    order = {d: i for i, d in enumerate(doc_ids)}
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values("doc_id", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def extendable(cfg, base_run: Path | None) -> Path | None:
    """`base_run` (the same pages at 1x, given for a budget above 1x) if this evaluation may extend
    it: greedy decoding, generation.reuse_budget on, the base run complete, and no retries (a 1x
    attempt that hit the limit may end at k x, and then no retry follows)."""
    from degenbench.decoding import mitigation

    gen = cfg.generation
    if base_run is None or gen.do_sample or not gen.get("reuse_budget", True) or not is_complete(base_run) \
            or mitigation.retries(cfg):
        return None
    return base_run
