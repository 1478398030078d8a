"""Loop-aware stopping: finish a generated row as soon as it is caught in a loop that would run
to the token limit, so one loop no longer holds its batch (a cut row counts as degenerate)."""
from __future__ import annotations

import bisect

import torch
from tokenizers.decoders import DecodeStream
from transformers import StoppingCriteria

from degenbench.metrics.degeneration import is_degenerate, loop_period_onset


class LoopStop(StoppingCriteria):
    """Per-row loop-aware stopping: a row is finished at once when its text meets the
    degeneration rule's tail test (its last `tail_chars` characters occur `min_repeats` times)
    AND ends in a loop (a pattern of <= `max_period` characters repeated back to back,
    `loop_tail`) whose pattern has run `min_copies` times or more, so a loop no longer holds its
    whole batch to the limit. The copy count keeps LoopStop off content that legitimately repeats
    and then ends, which the tail test alone fires on at four identical rows: a page holds only
    so many identical rows (a table, a ledger, a form's blank lines: each row one copy of the
    pattern) or so many characters of a run within a line (a dot leader: each character one
    copy), while a loop's copies grow without bound, and grow fastest for the short patterns
    loops mostly are. `min_run` (a share of the token budget the loop must also span; 0: none) is
    the older guard, which waited the same share of a long budget whatever the loop
    (results/benchmarks/loop_stop_tradeoff.md). `line_chars` x `max_lines` (what a line of the page
    holds, times a margin; either None: off) cuts sooner, without waiting for the tail test: a run
    of one short pattern with no line break in it (`inline_run`) longer than that many characters
    cannot be a line of the page. Rows that ended on their own are left alone.
    `stopped_at[i]` is the number of generated tokens row i had when it was cut. Each row's text
    grows by one token a step through the tokenizer's incremental decoder (tokenizers'
    DecodeStream): re-decoding every row at every step cost more than a tiny model's decoding
    step saves."""

    def __init__(self, tokenizer, prompt_len: int, eos: set[int], tail_chars: int = 15,
                 min_repeats: int = 4, every: int = 1, min_copies: int = 56, min_run: float = 0.0,
                 budget: int = 4096, max_period: int = 200, line_chars: int | None = None,
                 max_lines: float | None = None):
        self.tok, self.prompt_len, self.eos = tokenizer, prompt_len, torch.tensor(sorted(eos))
        self.tail_chars, self.min_repeats, self.every = tail_chars, min_repeats, every
        self.min_copies, self.min_run_tokens = min_copies, run_tokens(min_run, budget)
        self.max_period, self.inline_limit = max_period, inline_limit(line_chars, max_lines)
        self.stopped_at: dict[int, int] = {}
        self.ended: list[bool] = []
        self.rust = getattr(tokenizer, "_tokenizer", None)  # a fast tokenizer's own: decodes incrementally
        self.streams, self.texts, self.lengths = [], [], []
        self.loops: dict[int, tuple] = {}  # row -> (period, onset, text length when last checked)

    def _stream(self, gen: torch.LongTensor, live: list[int]) -> list[str]:
        """The live rows' texts so far, each grown by its newest token (special tokens skipped,
        as in the final output)."""
        last = gen[:, -1].tolist()
        for i in live:
            self.texts[i] += self.streams[i].step(self.rust, last[i]) or ""  # None: a character still incomplete
        return [self.texts[i] for i in live]

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        gen = input_ids[:, self.prompt_len:]
        n = gen.shape[1]
        if n == 1:
            self.streams = [DecodeStream(skip_special_tokens=True) for _ in range(len(gen))]
            self.texts, self.lengths, self.loops = [""] * len(gen), [[] for _ in range(len(gen))], {}
        self.eos = self.eos.to(gen.device)  # a no-op after the first step
        last = torch.isin(gen[:, -1], self.eos).tolist()  # rows that just ended
        self.ended = [a or b for a, b in zip(self.ended, last)] if n > 1 else last
        live = [i for i in range(len(gen)) if i not in self.stopped_at and not self.ended[i]]
        if self.rust is not None:
            texts = self._stream(gen, live)
        else:  # a slow tokenizer: decode the rows whole
            texts = self.tok.batch_decode(gen[live], skip_special_tokens=True)
            for i, text in zip(live, texts):
                self.texts[i] = text
        for i in live:
            self.lengths[i].append(len(self.texts[i]))
        if n % self.every == 0:  # +generation.loop_rule.every=4: a quarter of the checks
            for i, text in zip(live, texts):
                if self.looping(i, text):
                    self.stopped_at[i] = n
        done = torch.zeros(len(gen), dtype=torch.bool, device=input_ids.device)
        done[list(self.stopped_at)] = True
        return done

    def looping(self, i: int, text: str) -> bool:
        """Row i's text ends in a run longer than a page's line (`inline_run`), or its loop
        (`loop_at`) has run `min_copies` times and spans `min_run` of the budget."""
        if self.inline_limit and inline_run(text, self.inline_limit, self.min_repeats):
            return True
        period, onset = self.loop_at(i, text)
        return period is not None and confirmed(text, self.lengths[i], period, onset, self.min_copies,
                                                self.min_run_tokens)

    def loop_at(self, i: int, text: str) -> tuple[int | None, int | None]:
        """(period, onset) of the loop row i's text ends in, if it meets the rule's tail test
        (cheap, checked first); (None, None) otherwise. A row's loop is kept while the new text
        continues it, so a long loop costs a few comparisons a step."""
        if not is_degenerate(text, True, self.tail_chars, self.min_repeats):
            return None, None
        period, onset, seen = self.loops.get(i, (None, None, 0))
        if period is None or any(text[j] != text[j - period] for j in range(max(seen, onset + period), len(text))):
            period, onset = loop_tail(text, self.max_period, self.min_repeats)
        self.loops[i] = (period, onset, len(text))
        return period, onset


def run_tokens(min_run: float, budget: int) -> int:
    """The tokens a loop must span under `min_run` (a share of the budget); 0: no such wait."""
    return round(min_run * budget) if min_run else 0


def confirmed(text: str, lengths: list[int], period: int, onset: int, min_copies: int, min_tokens: int) -> bool:
    """Is the loop `text` ends in (period, onset) long enough to cut: `min_copies` copies of its
    pattern, spanning `min_tokens` tokens?"""
    return (len(text) - onset) // period >= min_copies and tokens_since(lengths, onset) >= min_tokens


def loop_tail(text: str, max_period: int = 200, min_repeats: int = 4) -> tuple[int | None, int | None]:
    """(period, onset) of the loop `text` ends in: at least `min_repeats` copies of a pattern of
    up to `max_period` characters; (None, None) if it ends in none. The period is found on the
    last few copies' worth of text, then the loop is followed back to where it began."""
    window = text[-max_period * (min_repeats + 1):]
    period, onset = loop_period_onset(window, max_period)
    if period is None:
        return None, None
    start = len(text) - len(window) + onset
    while start > 0 and text[start - 1] == text[start - 1 + period]:
        start -= 1
    return (period, start) if len(text) - start >= min_repeats * period else (None, None)


def inline_limit(line_chars: int | None, max_lines: float | None) -> int | None:
    """The characters an in-line run may hold before it is cut (None: the line rule is off)."""
    return round(line_chars * max_lines) if line_chars and max_lines else None


def inline_run(text: str, limit: int, min_repeats: int = 4) -> bool:
    """Does `text` end in more than `limit` characters with no line break (a newline, or JSON's
    escaped one), all copies of one pattern repeated back to back at least `min_repeats` times? A
    dot leader, a rule or a form's blank that outgrew the page's line: nothing a page could show."""
    tail = text[-limit - 1:]
    if len(tail) <= limit or "\n" in tail or "\\n" in tail:
        return False
    return any(tail[q:] == tail[:-q] for q in range(1, len(tail) // min_repeats + 1))


def tokens_since(lengths: list[int], onset: int) -> int:
    """How many generated tokens end past character `onset` (`lengths[k]`: the text's length
    after k + 1 tokens)."""
    return len(lengths) - bisect.bisect_right(lengths, onset)


def loop_cut(text: str, lengths: list[int], rule: dict, budget: int) -> bool:
    """LoopStop's decision on a whole text at once (the vLLM backend confirms its engine's
    repetition stops with it; audits replay it). `rule`: generation.loop_rule."""
    limit = inline_limit(rule.get("line_chars"), rule.get("max_lines"))
    if limit and inline_run(text, limit, rule["min_repeats"]):
        return True
    if not is_degenerate(text, True, rule["tail_chars"], rule["min_repeats"]):
        return False
    period, onset = loop_tail(text, rule.get("max_period", 200), rule["min_repeats"])
    return period is not None and confirmed(text, lengths, period, onset, rule.get("min_copies", 0),
                                            run_tokens(rule.get("min_run", 0.0), budget))


def text_lengths(tokenizer, ids: list[int]) -> list[int]:
    """The decoded text's length after each token, as LoopStop sees it grow."""
    rust = getattr(tokenizer, "_tokenizer", None)
    if rust is None:
        return [len(tokenizer.decode(ids[:k + 1], skip_special_tokens=True)) for k in range(len(ids))]
    stream, n, out = DecodeStream(skip_special_tokens=True), 0, []
    for t in ids:
        n += len(stream.step(rust, t) or "")
        out.append(n)
    return out
