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
    rev = np.frombuffer(text[::-1].encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    n, top = len(rev), min(max_period, len(rev) // 2)
    if top < 1:
        return None, None
    # all periods at once: same[p - 1, i] is rev[i] == rev[i + p], i.e. the text read from its end
    # matches itself p characters earlier; past the start a -1 sentinel never matches
    padded = np.concatenate([rev, np.full(top, -1)])
    periods = np.arange(1, top + 1)
    same = padded[np.arange(n)[None, :]] == padded[np.arange(n)[None, :] + periods[:, None]]
    run = np.argmin(same, axis=1)  # length of each period's trailing run of matches
    run[same.all(axis=1)] = n - periods[same.all(axis=1)]
    ok = run >= periods  # at least two full copies of the pattern
    if not ok.any():
        return None, None
    best = int(np.argmax(np.where(ok, run, -1)))  # longest periodic tail; the smallest period on ties
    return int(periods[best]), n - int(run[best]) - int(periods[best])


def seq_rep_n(tokens: Sequence, n: int = 4) -> float:
    """Welleck et al. (2019): 1 - unique n-grams / n-grams of a continuation; 0 for short ones."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def compression_ratio(text: str) -> float:
    """Whisper's loop signal: raw bytes / zlib-compressed bytes (above ~2.4 is suspicious)."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0
