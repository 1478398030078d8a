"""Batched generation through a family's processor and chat template."""
from __future__ import annotations

import time

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

from degenbench.models.chat import Output, encode, input_stats
from degenbench.decoding.loopstop import LoopStop
from degenbench.decoding.ngram import WindowedNoRepeatNGram, whitelist_ids


def _eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def decoding(model, gen: DictConfig, n: int = 1, pad_token_id: int | None = None) -> GenerationConfig:
    """The GenerationConfig degenbench runs: every decoding setting from `gen` (generation.* or
    sampling.*), nothing from the checkpoint's generation_config.json unless `gen.inherit` names
    it (e.g. [repetition_penalty] to decode as the model card does). Stop ids stay the model's."""
    from degenbench.models.families import own_decoding

    if not hasattr(model, "checkpoint_decoding"):  # a model not loaded by families.load
        own_decoding(model)
    settings = dict(max_new_tokens=gen.max_new_tokens, do_sample=bool(gen.do_sample), num_return_sequences=n,
                    repetition_penalty=gen.repetition_penalty,
                    # windowed blocking (ngram.py) replaces transformers' global one
                    no_repeat_ngram_size=0 if gen.get("ngram_window") else gen.no_repeat_ngram_size)
    if gen.do_sample:  # top_k 0: no top-k cut (transformers would apply its default 50)
        settings |= dict(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k or 0)
    for key in gen.get("inherit") or []:
        if key not in model.checkpoint_decoding:
            raise ValueError(f"{gen._get_full_key('inherit')} names {key!r}, which the checkpoint's "
                             f"generation_config.json does not set (it sets {sorted(model.checkpoint_decoding)})")
        settings[key] = model.checkpoint_decoding[key]
    ids = {k: v for k, v in model.generation_config.to_diff_dict().items()
           if k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if pad_token_id is not None:  # the tokenizer's, which pads the batch
        ids["pad_token_id"] = pad_token_id
    return GenerationConfig(**ids, **settings)


def decoding_record(model, gen: DictConfig, n: int = 1) -> dict:
    """What a run records about its decoding: the settings applied and what the checkpoint's
    generation_config.json asked for and degenbench did not apply."""
    if gen.get("backend", "hf") == "vllm":
        from degenbench.decoding import vllm

        return vllm.decoding_record(gen, n)
    applied = decoding(model, gen, n).to_diff_dict()
    applied.pop("transformers_version", None)
    if gen.get("ngram_window"):
        applied["windowed_ngram"] = {"n": gen.no_repeat_ngram_size, "window": gen.ngram_window,
                                     "whitelist": list(gen.get("ngram_whitelist") or [])}
    inherited = set(gen.get("inherit") or [])
    return {"backend": "hf", "applied": applied,
            "checkpoint_not_applied": {k: v for k, v in model.checkpoint_decoding.items() if k not in inherited}}


@torch.inference_mode()
def generate(model, processor, family: DictConfig, images: list[Image.Image], gen: DictConfig,
             num_return_sequences: int = 1, seed: int | None = None) -> list[Output]:
    """Generate for a batch of pages; row i * num_return_sequences + j is page i's j-th sample.
    `model` is an HF model, or a vLLM engine with generation.backend=vllm. `seed`: sampling
    seed of this batch (the same samples however the batches are run)."""
    if gen.get("backend", "hf") == "vllm":
        from degenbench.decoding import vllm

        return vllm.generate(model, processor, family, images, gen, num_return_sequences, seed)
    if seed is not None:
        torch.manual_seed(seed)
    inputs = encode(processor, family, images).to(model.device)
    stats = input_stats(inputs["input_ids"], inputs["attention_mask"], processor)
    eos, prompt_len = _eos_ids(model), inputs["input_ids"].shape[1]
    rule = OmegaConf.to_container(gen.loop_rule, resolve=True) | {"budget": gen.max_new_tokens}
    stop = LoopStop(processor.tokenizer, prompt_len, eos, **rule) if gen.get("loop_stop") else None
    blocks = [WindowedNoRepeatNGram(gen.no_repeat_ngram_size, gen.ngram_window, prompt_len,
                                    whitelist_ids(processor.tokenizer, gen.get("ngram_whitelist")))] \
        if gen.get("ngram_window") else []
    start = time.perf_counter()
    out = model.generate(**inputs, generation_config=decoding(model, gen, num_return_sequences,
                                                              processor.tokenizer.pad_token_id),
                         stopping_criteria=StoppingCriteriaList([stop] if stop else []),
                         logits_processor=LogitsProcessorList(blocks))
    seconds = time.perf_counter() - start
    results = []
    for row, ids in enumerate(out[:, prompt_len:].tolist()):
        cut = stop.stopped_at.get(row) if stop else None
        end = next((i for i, t in enumerate(ids) if t in eos), None)
        ids = ids[:cut] if cut is not None else ids if end is None else ids[:end + 1]
        results.append(Output(
            text=processor.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids,
            new_tokens=len(ids), hit_limit=cut is None and end is None and len(ids) >= gen.max_new_tokens,
            seconds=seconds / len(out), loop_stopped=cut is not None,
            inputs=stats[row // num_return_sequences]))
    return results


def release(model) -> None:
    """Free a generation model's memory before the next stage needs it (a vLLM engine holds its
    GPU memory until shut down)."""
    import gc

    if type(model).__module__.startswith("vllm"):
        from degenbench.decoding import vllm

        vllm.release(model)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
