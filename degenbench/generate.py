"""Batched generation through a family's processor and chat template."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from PIL import Image
from tokenizers.decoders import DecodeStream
from transformers import StoppingCriteria, StoppingCriteriaList

from degenbench.metrics.degeneration import is_degenerate


@dataclass
class Output:
    text: str
    token_ids: list[int]  # generated ids, up to and including the end-of-turn token if any
    new_tokens: int
    hit_limit: bool  # ran out of max_new_tokens without an end-of-turn token
    seconds: float  # this row's equal share of its batch's wall clock
    loop_stopped: bool = False  # cut by LoopStop: it met the degeneration rule before the limit


class LoopStop(StoppingCriteria):
    """Per-row loop-aware stopping: a row whose text so far meets the degeneration rule's tail
    test (its last `tail_chars` characters occur `min_repeats` times) is finished at once, so a
    loop no longer holds its whole batch to the token limit. Rows that ended on their own are
    left alone. `stopped_at[i]` is the number of generated tokens row i had when it was cut.
    Each row's text grows by one token a step through the tokenizer's incremental decoder
    (tokenizers' DecodeStream): re-decoding every row at every step cost more than a tiny
    model's decoding step saves."""

    def __init__(self, tokenizer, prompt_len: int, eos: set[int], tail_chars: int = 15,
                 min_repeats: int = 4, every: int = 1):
        self.tok, self.prompt_len, self.eos = tokenizer, prompt_len, torch.tensor(sorted(eos))
        self.tail_chars, self.min_repeats, self.every = tail_chars, min_repeats, every
        self.stopped_at: dict[int, int] = {}
        self.ended: list[bool] = []
        self.rust = getattr(tokenizer, "_tokenizer", None)  # a fast tokenizer's own: decodes incrementally
        self.streams, self.texts = [], []

    def _stream(self, gen: torch.LongTensor, live: list[int]) -> list[str]:
        """The live rows' texts so far, each grown by its newest token (special tokens skipped,
        as in the final output)."""
        if gen.shape[1] == 1:
            self.streams = [DecodeStream(skip_special_tokens=True) for _ in range(len(gen))]
            self.texts = [""] * len(gen)
        last = gen[:, -1].tolist()
        for i in live:
            self.texts[i] += self.streams[i].step(self.rust, last[i]) or ""  # None: a character still incomplete
        return [self.texts[i] for i in live]

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        gen = input_ids[:, self.prompt_len:]
        n = gen.shape[1]
        self.eos = self.eos.to(gen.device)  # a no-op after the first step
        last = torch.isin(gen[:, -1], self.eos).tolist()  # rows that just ended
        self.ended = [a or b for a, b in zip(self.ended, last)] if n > 1 else last
        live = [i for i in range(len(gen)) if i not in self.stopped_at and not self.ended[i]]
        texts = self._stream(gen, live) if self.rust is not None else None
        if n % self.every == 0 and live:  # +generation.loop_rule.every=4: a quarter of the checks
            if texts is None:  # a slow tokenizer: decode the rows whole
                texts = self.tok.batch_decode(gen[live], skip_special_tokens=True)
            for i, text in zip(live, texts):
                if is_degenerate(text, True, self.tail_chars, self.min_repeats):
                    self.stopped_at[i] = n
        done = torch.zeros(len(gen), dtype=torch.bool, device=input_ids.device)
        done[list(self.stopped_at)] = True
        return done


def messages(family: DictConfig, image: Image.Image, answer: str | None = None) -> list[dict]:
    """One document as a chat: the page and the family's prompt (and the answer, for training)."""
    img = {"type": "image", "image": image}
    if family.vision_utils == "qwen":  # qwen-vl-utils resizes within these bounds, to 28-px tokens
        img |= {"min_pixels": family.min_pixels, "max_pixels": family.max_pixels}
    chat = [{"role": "user", "content": [img, {"type": "text", "text": family.prompt}]}]
    if answer is not None:
        chat.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return chat


def encode(processor, family: DictConfig, images: list[Image.Image]):
    """Model inputs for a batch of pages (left-padded, generation prompt appended)."""
    chats = [messages(family, im) for im in images]
    texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    if family.vision_utils == "qwen":
        from qwen_vl_utils import process_vision_info

        vision, _ = process_vision_info(chats)
    else:
        vision = [[im] for im in images]
    return processor(text=texts, images=vision, padding=True, return_tensors="pt")


def _eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


@torch.inference_mode()
def generate(model, processor, family: DictConfig, images: list[Image.Image], gen: DictConfig,
             num_return_sequences: int = 1) -> list[Output]:
    """Generate for a batch of pages; row i * num_return_sequences + j is page i's j-th sample.
    `model` is an HF model, or a vLLM engine with generation.backend=vllm."""
    if gen.get("backend", "hf") == "vllm":
        from degenbench.backends import vllm

        return vllm.generate(model, processor, family, images, gen, num_return_sequences)
    inputs = encode(processor, family, images).to(model.device)
    sampling = {"temperature": gen.temperature, "top_p": gen.top_p} if gen.do_sample else {}
    eos, prompt_len = _eos_ids(model), inputs["input_ids"].shape[1]
    stop = LoopStop(processor.tokenizer, prompt_len, eos, **gen.loop_rule) if gen.get("loop_stop") else None
    start = time.perf_counter()
    out = model.generate(**inputs, max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample,
                         num_return_sequences=num_return_sequences,
                         pad_token_id=processor.tokenizer.pad_token_id,
                         stopping_criteria=StoppingCriteriaList([stop] if stop else []), **sampling)
    seconds = time.perf_counter() - start
    results = []
    for row, ids in enumerate(out[:, prompt_len:].tolist()):
        cut = stop.stopped_at.get(row) if stop else None
        end = next((i for i, t in enumerate(ids) if t in eos), None)
        ids = ids[:cut] if cut is not None else ids if end is None else ids[:end + 1]
        results.append(Output(
            text=processor.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids,
            new_tokens=len(ids), hit_limit=cut is None and end is None and len(ids) >= gen.max_new_tokens,
            seconds=seconds / len(out), loop_stopped=cut is not None))
    return results
