"""Per-document metrics and their summary. Pure functions of text; no model in sight."""
from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace

from omegaconf import DictConfig, OmegaConf

from degenbench.documents.record import Document
from degenbench.metrics.degeneration import (compression_ratio, is_degenerate, loop_period_onset,
                                             seq_rep_n)
from degenbench.metrics.stats import wilson
from degenbench.metrics.text import cer, field_cers, ned, paper_score, parse_prediction, salvage_fields

__all__ = ["cer", "compression_ratio", "is_degenerate", "loop_period_onset", "ned", "paper_score",
           "parse_prediction", "score_output", "seq_rep_n", "settings", "summarize", "wilson"]


def settings(cfg: DictConfig) -> SimpleNamespace:
    """The metrics config as plain attributes: read once per document, a DictConfig's attribute
    access would cost more than some metrics."""
    return SimpleNamespace(**OmegaConf.to_container(cfg, resolve=True))


def score_output(doc: Document, output: str, hit_limit: bool, token_ids: Sequence[int],
                 cfg: DictConfig, loop_stopped: bool = False) -> dict:
    """Every per-document metric of one model output against the document's truth. An output cut
    by loop-aware stopping counts as degenerate: it was caught in a loop on its way to the limit,
    and its line rule may cut before the paper's tail test holds."""
    fields, pred_plain = parse_prediction(output)
    period, onset = loop_period_onset(output, cfg.max_period)
    return {
        "degenerate": loop_stopped or is_degenerate(output, hit_limit, cfg.tail_chars, cfg.min_repeats),
        "loop_period": period, "loop_onset": onset,
        "seq_rep_n": seq_rep_n(list(token_ids), cfg.seq_rep_n),
        "compression_ratio": compression_ratio(output),
        "cer": cer(doc.text, pred_plain), "ned": ned(doc.text, pred_plain),
        "score": paper_score(doc.text, pred_plain),
        "json_valid": fields is not None,
        **field_cers(doc.truth, fields if fields is not None else salvage_fields(output)),
    }


def summarize(rows: list[dict], skipped: list[dict], alpha: float = 0.05) -> dict:
    """Run summary: rates with Wilson intervals, mean quality, counts (skips with reasons)."""
    n = len(rows)

    def rate(key: str) -> tuple[float, list[float]]:
        k = sum(bool(r[key]) for r in rows)
        return (k / n if n else math.nan), list(wilson(k, n, alpha))

    def mean_where(key: str, keep) -> float:
        # a field a row lacks is None in memory and NaN once the rows went through parquet
        vals = [r[key] for r in rows if keep(r) and r.get(key) is not None and not math.isnan(r[key])]
        return sum(vals) / len(vals) if vals else math.nan

    def mean(key: str) -> float:
        return mean_where(key, lambda r: True)

    deg, deg_ci = rate("degenerate")
    valid, valid_ci = rate("json_valid")
    return {
        "n_docs": n, "n_skipped": len(skipped), "skipped": skipped,
        "n_degenerate": sum(bool(r["degenerate"]) for r in rows),
        "degeneration_rate": deg, "degeneration_ci95": deg_ci,
        "hit_limit_rate": rate("hit_limit")[0],
        "n_loop_stopped": sum(bool(r.get("loop_stopped")) for r in rows),
        "cer": mean("cer"), "ned": mean("ned"), "score": mean("score"),
        # a loop alone costs a page a CER of 2-3: reading quality apart from loops, beside the mean
        "cer_not_degenerate": mean_where("cer", lambda r: not r["degenerate"]),
        "json_valid_rate": valid, "json_valid_ci95": valid_ci,
        **{k: mean(k) for k in ("cer_header", "cer_margin", "cer_footer", "cer_text")},
        "new_tokens": sum(r["new_tokens"] for r in rows),
        "new_tokens_degenerate": sum(r["new_tokens"] for r in rows if r["degenerate"]),
        "generate_seconds": sum(r["seconds"] for r in rows),
        "generate_seconds_degenerate": sum(r["seconds"] for r in rows if r["degenerate"]),
        # pages whose truth legitimately repeats (tables of identical rows, ledgers, forms) apart
        "n_repetitive": sum(bool(r.get("repetitive")) for r in rows),
        "cer_repetitive": mean_where("cer", lambda r: bool(r.get("repetitive"))),
        "cer_ordinary": mean_where("cer", lambda r: not r.get("repetitive")),
        # a mitigation's retries: every attempt's tokens and seconds
        "n_retried": sum(r.get("attempts", 1) > 1 for r in rows),
        "new_tokens_all": sum(r.get("new_tokens_all", r["new_tokens"]) for r in rows),
        "generate_seconds_all": sum(r.get("seconds_all", r["seconds"]) for r in rows),
    }
