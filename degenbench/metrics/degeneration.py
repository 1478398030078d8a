"""Degeneration: the paper's rule, plus diagnostics of the loop (period, onset, seq-rep-n, zlib)."""
from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def is_degenerate(text: str, hit_limit: bool, tail_chars: int = 15, min_repeats: int = 4) -> bool:
    """DharmaOCR's rule: the output ran into the token limit AND its last `tail_chars` characters
    occur at least `min_repeats` times (non-overlapping) in it. An output that stopped on its own is
    never degenerate, however repetitive (a table of repeated rows, say)."""
    if not hit_limit or len(text) < tail_chars:
        return False
    return text.count(text[-tail_chars:]) >= min_repeats


def loop_period_onset(text: str, max_period: int = 200) -> tuple[int | None, int | None]:
    """The loop at the end of `text`: its period (characters) and onset (index where the periodic
    tail starts). The period is the one whose periodic tail is longest (smallest on ties); (None,
    None) when no tail repeats at least twice in full."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    n = len(codes)
    best_len, best_p = 0, None
    for p in range(1, min(max_period, n // 2) + 1):
        same = codes[p:] == codes[:-p]  # same[i]: text[i + p] == text[i]
        k = n - p if same.all() else int(np.argmin(same[::-1]))  # trailing run of matches
        if k >= p and k > best_len:  # k >= p: at least two full copies of the pattern
            best_len, best_p = k, p
    if best_p is None:
        return None, None
    return best_p, n - best_len - best_p


def seq_rep_n(tokens: Sequence, n: int = 4) -> float:
    """Welleck et al. (2019): 1 - unique n-grams / n-grams of a continuation; 0 for short ones."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def compression_ratio(text: str) -> float:
    """Whisper's loop signal: raw bytes / zlib-compressed bytes (above ~2.4 is suspicious)."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0
