"""Judges: score each candidate. Degeneration is always the rule; quality comes from the judge."""
from __future__ import annotations

import logging
import re

import pandas as pd
from omegaconf import DictConfig

from degenbench.documents import Document
from degenbench.metrics import is_degenerate, paper_score, parse_prediction

log = logging.getLogger(__name__)


class ReferenceJudge:
    """Quality = the paper's score against the truth (plain text)."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def quality(self, doc: Document, text: str) -> float:
        return paper_score(doc.text, parse_prediction(text)[1])


class LLMJudge:
    """Quality = an integer 0-10 from a local causal LM asked about the criteria, / 10. For data
    without truth; an answer without a number scores 0 and is counted as unparsed."""

    def __init__(self, cfg: DictConfig):
        import torch
        from transformers import pipeline

        self.cfg = cfg
        self.pipe = pipeline("text-generation", model=cfg.model, dtype=getattr(torch, cfg.dtype))
        self.unparsed = 0

    def quality(self, doc: Document, text: str) -> float:
        prompt = self.cfg.prompt.format(criteria="\n".join(f"- {c}" for c in self.cfg.criteria),
                                        candidate=text)
        reply = self.pipe(prompt, max_new_tokens=self.cfg.max_new_tokens, do_sample=False,
                          return_full_text=False)[0]["generated_text"]
        m = re.search(r"\d+", reply)
        if m is None:
            self.unparsed += 1
            return 0.0
        return min(int(m.group()), 10) / 10


JUDGES = {"reference": ReferenceJudge, "llm": LLMJudge}


def judge_candidates(cfg: DictConfig, docs: dict[str, Document], cands: pd.DataFrame) -> pd.DataFrame:
    """Add degenerate, json_valid, quality and good (usable as chosen) to each candidate."""
    judge = JUDGES[cfg.judge.kind](cfg.judge)
    m, j = cfg.metrics, cfg.judge
    out = cands.copy()
    cut = out["loop_stopped"] if "loop_stopped" in out else [False] * len(out)  # older candidate sets
    out["degenerate"] = [is_degenerate(t, h or c, m.tail_chars, m.min_repeats)
                         for t, h, c in zip(out["text"], out["hit_limit"], cut)]
    out["json_valid"] = [parse_prediction(t)[0] is not None for t in out["text"]]
    out["quality"] = [judge.quality(docs[d], t) for d, t in zip(out["doc_id"], out["text"])]
    out["good"] = (~out["degenerate"] & (out["json_valid"] | (not j.require_json))
                   & (out["quality"] >= j.min_score))
    if getattr(judge, "unparsed", 0):
        log.warning("LLM judge gave no score for %d of %d candidates", judge.unparsed, len(out))
    return out
