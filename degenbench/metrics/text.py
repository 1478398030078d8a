"""Transcription quality: CER, normalised edit distance, the paper's score, JSON validity."""
from __future__ import annotations

import json
import re

import jiwer
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rapidfuzz.distance import Levenshtein

from degenbench.documents.record import FIELDS, plain_text

_SMOOTH = SmoothingFunction().method1


def cer(truth: str, pred: str) -> float:
    """Character error rate (S + D + I) / len(truth); exceeds 1 when the output is much longer."""
    if not truth:
        raise ValueError("CER is undefined for an empty reference")
    return float(jiwer.cer(truth, pred))


def ned(truth: str, pred: str) -> float:
    """Normalised edit distance: distance / max(len(truth), len(pred)), in [0, 1]."""
    return float(Levenshtein.normalized_distance(truth, pred))


def bleu4(truth: str, pred: str) -> float:
    """Sentence BLEU-4 on whitespace tokens, NLTK smoothing method1 (as the paper); short strings
    are reweighed to their own length so identical strings score 1."""
    if not truth.split() or not pred.split():
        return float(truth.split() == pred.split())
    return float(sentence_bleu([truth.split()], pred.split(), smoothing_function=_SMOOTH,
                               auto_reweigh=True))


def paper_score(truth: str, pred: str) -> float:
    """DharmaOCR's per-document score: (Levenshtein ratio + BLEU-4) / 2."""
    return (float(Levenshtein.normalized_similarity(truth, pred)) + bleu4(truth, pred)) / 2


_FIELD_RE = re.compile(r'"(header|margin|footer|text)"\s*:\s*"((?:[^"\\]|\\.)*)("?)', re.S)


def parse_prediction(output: str) -> tuple[dict[str, str] | None, str]:
    """(fields if the output is valid schema JSON else None, plain-text form of the output).
    Invalid or truncated JSON (a loop cut at the limit) is salvaged field by field, so its text is
    still compared; output with no recognisable field is compared as it is."""
    s = output.strip()
    try:
        obj = json.loads(s)
    except (json.JSONDecodeError, RecursionError):  # a loop of "[" nests past the decoder's limit
        obj = None
    if isinstance(obj, dict) and set(obj) == set(FIELDS) and all(isinstance(v, str) for v in obj.values()):
        return obj, plain_text(obj)
    salvaged = salvage_fields(s)
    return None, plain_text(salvaged) if salvaged else s


def salvage_fields(output: str) -> dict[str, str]:
    """The schema fields that can be read out of invalid or truncated JSON, field by field."""
    salvaged = {}
    for key, value, _ in _FIELD_RE.findall(output.strip()):
        try:
            salvaged.setdefault(key, json.loads(f'"{value}"'))
        except json.JSONDecodeError:  # cut inside an escape sequence
            salvaged.setdefault(key, value)
    return salvaged


def field_cers(truth: dict[str, str], pred: dict[str, str]) -> dict[str, float | None]:
    """CER per schema field against the output's fields (valid JSON, or those salvaged from
    broken JSON): a field the output lacks counts as empty (CER 1). None where the truth field is
    empty (CER is undefined there)."""
    return {f"cer_{k}": (cer(truth[k], pred.get(k, "")) if truth[k] else None) for k in FIELDS}
