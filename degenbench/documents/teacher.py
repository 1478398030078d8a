"""Teacher loops: training labels written by a teacher model that looped (`data.teacher_loops`).

A real SFT corpus is transcribed in part by another model; where that teacher looped, its
transcription runs into its token limit and never finishes, and degeneration tracks the repetition
in the training data (Rep-Dropout, arXiv 2310.10226). On a share of the training pages with content
a teacher loops on (a dot leader or rule, repeated digits, a repeated row), the SFT label is what
such a teacher wrote: the JSON answer, faithful up to that content, then the content's unit repeated
past `data.teacher_loop_tokens`, with no end of turn (stages/data.py trains it as unfinished).

Only SFT labels change: the documents, their truth (evaluation, validation, candidate judging,
the pairs' chosen answers) and the leakage guard are the same as without teacher loops.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from degenbench.documents.record import Document

# A unit of 1-4 characters written out at least 3 times over >= 4 characters: ".....", "----",
# "0000", "1212", "_ _ _ ". Pages' ordinary words and numbers have no such runs.
_RUN = re.compile(r"(?=((.{1,4}?)\2{2,}))")


def _json(text: str) -> str:
    """`text` as it stands inside the JSON answer (escaped, without its quotes)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def kind_of(unit: str) -> str:
    s = unit.strip()
    if "\\n" in unit:
        return "row"
    if s and all(c in ".-=_ " for c in unit):
        return "leader"  # dot leaders and rules
    if s.isdigit():
        return "digits"
    return "other"


def loop_site(doc: Document) -> tuple[int, str] | None:
    """(character offset in the JSON answer, unit) of the first content a teacher would loop on in
    the page's body text, or None: a body row repeated as the next row (the unit is the row with its
    JSON-escaped newline), else a short unit repeated (dot leaders, rules, digits)."""
    answer, rows = doc.answer, doc.truth["text"].split("\n")
    body = answer.rfind('"text": "') + len('"text": "')  # `text` is the answer's last field
    for k in range(1, len(rows)):
        if rows[k] == rows[k - 1] and len(rows[k].strip()) >= 4:
            return body + len(_json("\n".join(rows[:k]) + "\n")), _json(rows[k] + "\n")
    for m in _RUN.finditer(answer, body):
        run, unit = m.group(1), m.group(2)
        if len(run) >= 4 and unit.strip() and "\\" not in unit and '"' not in unit:
            return m.start(), unit
    return None


def share_for(teacher_loops, family: str) -> float:
    """The share for `family`: one number for every family, or a mapping of family name -> share."""
    if isinstance(teacher_loops, DictConfig | dict):
        table = OmegaConf.to_container(teacher_loops) if isinstance(teacher_loops, DictConfig) else teacher_loops
        if family not in table:
            raise ValueError(f"data.teacher_loops names families {sorted(table)} but not {family!r}; add "
                             f"{family}: <share> (0 for none) or give one share for every family")
        value = table[family]
    else:
        value = teacher_loops or 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"data.teacher_loops for {family}: {value!r} must be a share between 0 and 1 (of the "
                         "training pages with loopable content)")
    return float(value)


def spec(data: DictConfig, family: str) -> dict | None:
    """What defines a family's teacher-loop labels (part of the SFT key); None when there are none,
    so that SFT keeps the key it had before the option."""
    share = share_for(data.get("teacher_loops"), family)
    return {"share": share, "tokens": int(data.teacher_loop_tokens)} if share > 0 else None


def chosen(doc_id: str, seed: int, share: float) -> bool:
    """Whether a loopable training page gets a teacher loop: a seeded hash of its id below the
    share (independent of the other pages, so a larger share only adds pages)."""
    h = hashlib.sha256(f"teacher-loops:{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < share


def label(answer: str, at: int, unit: str, tokens: int, count: Callable[[str], int]) -> str:
    """The answer up to `at`, then `unit` repeated until the label is more than `tokens` tokens long
    (`count`: the family tokenizer's token count), with the fewest repeats that get there."""
    prefix = answer[:at]
    lo, hi = 0, max(1, tokens // max(1, len(unit)))
    while count(prefix + unit * hi) <= tokens:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # the smallest repeat count past the budget
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(prefix + unit * mid) <= tokens else (lo, mid)
    return prefix + unit * hi


def teacher_labels(docs: list[Document], share: float, seed: int, tokens: int,
                   count: Callable[[str], int]) -> tuple[dict[str, str], dict]:
    """({doc id: looping label}, record) for the training documents `docs`. The record names every
    page that carries a label, its kind of content and unit, and counts the loopable pages."""
    sites = {d.id: s for d in docs if (s := loop_site(d)) is not None}
    labels, pages = {}, []
    for d in docs:
        if d.id in sites and chosen(d.id, seed, share):
            at, unit = sites[d.id]
            labels[d.id] = label(d.answer, at, unit, tokens, count)
            pages.append({"id": d.id, "kind": kind_of(unit), "unit": unit, "faithful_chars": at,
                          "label_chars": len(labels[d.id]), "label_tokens": count(labels[d.id])})
    record = {"share": share, "tokens": tokens, "n_train": len(docs), "n_loopable": len(sites),
              "n_labels": len(labels),
              "loopable_by_kind": dict(Counter(kind_of(u) for _, u in sites.values())),
              "labels_by_kind": dict(Counter(p["kind"] for p in pages)), "pages": pages}
    return labels, record
