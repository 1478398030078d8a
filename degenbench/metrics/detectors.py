"""Loop detectors of the field, each with its published thresholds, beside the paper's rule
(`degeneration.is_degenerate`), so that which pages each flags can be compared page by page:

- olmOCR-Bench's RepeatDetector: whitespace runs folded to one space, the text's last character
  n-gram (n = 1..5) repeated back to back more than 30 times at its end;
- vLLM's repetition_detection: the last tokens are one pattern of min..max tokens repeated
  min_count times back to back (degenbench passes the sizes `vllm.repetition_detection` derives);
- Whisper's compression ratio: zlib ratio above 2.4.
None of them asks whether the output hit the token limit; the paper's rule does."""
from __future__ import annotations

import re
from collections.abc import Sequence

from degenbench.metrics.degeneration import compression_ratio

REPEAT_MAX_N, REPEAT_MIN = 5, 30   # olmOCR-Bench
WHISPER_RATIO = 2.4                # Whisper's compression_ratio_threshold


def tail_repeats(text: str, n: int) -> int:
    """How many times the last n characters occur back to back at the end of `text`."""
    if n < 1 or len(text) < n:
        return 0
    unit, k = text[-n:], 1
    while text.endswith(unit * (k + 1)):
        k += 1
    return k


def repeat_detector(text: str, max_n: int = REPEAT_MAX_N, more_than: int = REPEAT_MIN) -> bool:
    folded = re.sub(r"\s+", " ", text)
    return any(tail_repeats(folded, n) > more_than for n in range(1, max_n + 1))


def token_pattern(token_ids: Sequence[int], min_size: int, max_size: int, min_count: int) -> bool:
    ids = list(token_ids)
    for size in range(min_size, max_size + 1):
        span = size * min_count
        if len(ids) >= span and ids[-span:] == ids[-size:] * min_count:
            return True
    return False


def compression(text: str, threshold: float = WHISPER_RATIO) -> bool:
    return compression_ratio(text) > threshold


def flags(text: str, token_ids: Sequence[int], vllm_rule: dict) -> dict:
    """Each detector's flag for one output (`vllm_rule`: min_pattern_size, max_pattern_size, min_count)."""
    return {"flag_repeat_detector": repeat_detector(text),
            "flag_token_pattern": token_pattern(token_ids, vllm_rule["min_pattern_size"],
                                                vllm_rule["max_pattern_size"], vllm_rule["min_count"]),
            "flag_compression": compression(text)}
