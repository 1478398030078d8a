"""Windowed n-gram blocking, as DeepSeek-OCR decodes: a token that would complete an n-gram already
among the last `window` generated tokens is banned, unless whitelisted (table-cell tags repeat by
design; its scripts use n/window 20/50, 30/90, 40/90 with <td>, </td> allowed). transformers'
`no_repeat_ngram_size` bans over the whole sequence, prompt included, so a long table can never
repeat a row; the window lets content repeat once the repeat is far enough back. vLLM runs the
same rule in DeepSeek-OCR's NGramPerReqLogitsProcessor (degenbench/decoding/vllm.py)."""
from __future__ import annotations

import torch
from transformers import LogitsProcessor


def banned(generated: list[int], n: int, window: int) -> set[int]:
    """The tokens that would complete an n-gram starting within the last `window` generated tokens
    whose first n - 1 tokens are the sequence's last n - 1."""
    if len(generated) < n - 1 or n < 1:
        return set()
    prefix = generated[len(generated) - (n - 1):]
    start = max(0, len(generated) - window)
    return {generated[i + n - 1] for i in range(start, len(generated) - n + 1) if generated[i:i + n - 1] == prefix}


class WindowedNoRepeatNGram(LogitsProcessor):
    """For HF generate: rows of `input_ids` are prompt (the first `prompt_len` tokens) + output;
    only the output is searched, as vLLM's per-request processor searches its output tokens."""

    def __init__(self, n: int, window: int, prompt_len: int, whitelist: set[int] = frozenset()):
        if n < 1 or window < n:
            raise ValueError(f"windowed n-gram blocking needs n >= 1 and window >= n (got n={n}, window={window})")
        self.n, self.window, self.prompt_len, self.whitelist = n, window, prompt_len, set(whitelist)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, seq in enumerate(input_ids[:, self.prompt_len:].tolist()):
            ban = banned(seq, self.n, self.window) - self.whitelist
            if ban:
                scores[row, list(ban)] = -float("inf")
        return scores


def whitelist_ids(tokenizer, tokens) -> set[int]:
    """Token ids of the whitelisted token strings; a string the tokenizer has no single token for is
    an error naming it (it could never be matched)."""
    ids = {}
    for t in tokens or []:
        i = tokenizer.convert_tokens_to_ids(t)
        if i is None or i == tokenizer.unk_token_id:
            raise ValueError(f"generation.ngram_whitelist names {t!r}, which is not one token of this tokenizer")
        ids[t] = i
    return set(ids.values())
