"""Batched generation through a family's processor and chat template."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from PIL import Image


@dataclass
class Output:
    text: str
    token_ids: list[int]  # generated ids, up to and including the end-of-turn token if any
    new_tokens: int
    hit_limit: bool  # ran out of max_new_tokens without an end-of-turn token
    seconds: float  # this row's equal share of its batch's wall clock


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
    """Generate for a batch of pages; row i * num_return_sequences + j is page i's j-th sample."""
    inputs = encode(processor, family, images).to(model.device)
    sampling = {"temperature": gen.temperature, "top_p": gen.top_p} if gen.do_sample else {}
    start = time.perf_counter()
    out = model.generate(**inputs, max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample,
                         num_return_sequences=num_return_sequences,
                         pad_token_id=processor.tokenizer.pad_token_id, **sampling)
    seconds = time.perf_counter() - start
    new = out[:, inputs["input_ids"].shape[1]:].tolist()
    eos = _eos_ids(model)
    results = []
    for ids in new:
        stop = next((i for i, t in enumerate(ids) if t in eos), None)
        ids = ids if stop is None else ids[:stop + 1]
        results.append(Output(
            text=processor.tokenizer.decode(ids, skip_special_tokens=True),
            token_ids=ids, new_tokens=len(ids), hit_limit=stop is None and len(ids) >= gen.max_new_tokens,
            seconds=seconds / len(new)))
    return results
