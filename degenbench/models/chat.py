"""A page as the family's chat: the messages, the encoded batch and what the model sees of it.
Shared by HF generation, the vLLM backend and the training-data checks."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from PIL import Image

from degenbench.models.arch import adapter
from degenbench.documents import BadDocument


@dataclass
class Output:
    text: str
    token_ids: list[int]  # generated ids, up to and including the end-of-turn token if any
    new_tokens: int
    hit_limit: bool  # ran out of max_new_tokens without an end-of-turn token
    seconds: float  # this row's equal share of its batch's wall clock
    loop_stopped: bool = False  # cut by LoopStop: caught in a loop before the limit
    inputs: dict = field(default_factory=dict)  # the prompt as the model saw it: tokens, image tokens, BOS


def messages(family: DictConfig, image: Image.Image, answer: str | None = None) -> list[dict]:
    """One document as a chat: the page and the family's prompt (and the answer, for training)."""
    img = adapter(family).image_entry(family, image)
    chat = [{"role": "user", "content": [img, {"type": "text", "text": family.prompt}]}]
    if answer is not None:
        chat.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return chat


def encode(processor, family: DictConfig, images: list[Image.Image]):
    """Model inputs for a batch of pages (left-padded, generation prompt appended). The chat
    template writes the special tokens (Gemma's <bos> among them): the tokenizer adds none, as in
    TRL's training collators (a Gemma tokenizer would otherwise prepend a second <bos>)."""
    chats = [messages(family, im) for im in images]
    texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    vision = adapter(family).vision_inputs(chats, images)
    return processor(text=texts, images=vision, padding=True, return_tensors="pt", add_special_tokens=False)


def page_check(family: DictConfig, processor) -> Callable[[Image.Image], None] | None:
    """What the family's image path refuses, checked on each page before it joins a batch: one page
    it cannot take (e.g. qwen-vl-utils' aspect-ratio limit of 200, a page too thin to resize) would
    fail its whole batch, and every rerun at the same batch. Such a page is a BadDocument, a counted
    skip. None: the architecture takes any page (Gemma3 resizes every page to its square)."""
    fits = adapter(family).page_check(family, processor)
    if fits is None:
        return None

    def check(page: Image.Image) -> None:
        try:
            fits(page)
        except ValueError as e:
            raise BadDocument(f"{family.name}'s image processing refuses this {page.width}x{page.height} page "
                              f"({e}); crop or pad the page, or drop the document") from e
    return check


def input_stats(input_ids: torch.Tensor, attention_mask: torch.Tensor, processor) -> list[dict]:
    """Per row: prompt tokens, image tokens and BOS tokens, as the model receives them (the same
    count for generation and for TRL's training batches: one page, one size, one BOS)."""
    tok = processor.tokenizer
    # Gemma3's processor names its <start_of_image>; the tokenizer names the soft tokens that fill the image
    image, bos = tok.convert_tokens_to_ids(getattr(tok, "image_token", None) or processor.image_token), tok.bos_token_id
    return [{"prompt_tokens": int(m.sum()), "image_tokens": int((ids == image).sum()),
             "bos_tokens": int((ids[m.bool()] == bos).sum()) if bos is not None else 0}
            for ids, m in zip(input_ids, attention_mask)]
