"""vLLM backend (`pip install degenbench[vllm]`, `generation.backend=vllm`, a CUDA machine): the same
pages, chat template, decoding settings and labels as the HF backend, with vLLM's continuous
batching. Needs vLLM >= 0.19.1 (repetition_detection came in 0.17.0, transformers 5 in 0.19.1).

- Decoding: an explicit SamplingParams from degenbench's config, and `generation_config="vllm"`,
  so the checkpoint's generation_config.json sampling defaults never apply (its stop ids do).
- Prompts: tokenized here without special tokens (the chat template writes Gemma's <bos>: vLLM
  would add a second), the page with the family's pixel bounds (mm_processor_kwargs).
- n-gram blocking: vLLM has no no_repeat_ngram_size; its NGramPerReqLogitsProcessor (the
  DeepSeek-OCR recipe, in vllm.model_executor.models.deepseek_ocr) takes it per request through
  SamplingParams.extra_args (ngram_size, window_size = the whole budget, as HF looks back over all
  of it; HF also counts the prompt's n-grams, vLLM's processor only the output's). The engine
  registers the processor only for a job that blocks n-grams (`engine_kwargs(family, gens)`).
- Loop stopping: vLLM's repetition detection (a token pattern repeated back to back) is only a
  trigger. A row it stops is kept as cut only if degenbench's own LoopStop test agrees
  (loopstop.loop_cut); any other is continued from where it stopped, so a long number ("10000")
  or a repeated table never ends early, and labels are those of the HF backend.

A LoRA stage is evaluated through a merged copy of the model (vLLM loads full weights); the copy
is built once next to the adapter, under the artifact store's rules.
"""
from __future__ import annotations

import gc
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from degenbench.models.arch import adapter
from degenbench.models.chat import Output, messages
from degenbench.decoding.loopstop import inline_limit, loop_cut, run_tokens, text_lengths
from degenbench.decoding.ngram import whitelist_ids

MIN_VERSION = "0.19.1"


def available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


NGRAM_PROCESSOR = "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"


def engine_kwargs(family: DictConfig, gens: list[DictConfig] = ()) -> dict:
    """LLM(...) arguments; `gens`: the generation settings the engine will run (a mitigation's
    attempts), so that n-gram blocking gets its logits processor."""
    kw = dict(dtype=family.dtype, trust_remote_code=bool(family.trust_remote_code),
              limit_mm_per_prompt={"image": 1}, generation_config="vllm")
    if any(g.get("no_repeat_ngram_size") for g in gens):
        kw["logits_processors"] = [NGRAM_PROCESSOR]
    return kw | adapter(family).vllm_kwargs(family)  # e.g. the HF processor's pixel bounds


def load(family: DictConfig, model_dir: str | Path | None, gens: list[DictConfig] = (), **engine):
    """A vLLM engine on the stage's weights (None: the family's base), for `gens` (engine_kwargs)."""
    if not available():
        raise ImportError("generation.backend=vllm needs vLLM: pip install 'degenbench[vllm]' (on a "
                          "CUDA machine), or use generation.backend=hf")
    import vllm
    from packaging.version import Version

    if Version(vllm.__version__) < Version(MIN_VERSION):
        raise ImportError(f"vLLM {vllm.__version__} is too old: degenbench needs >= {MIN_VERSION} "
                          "(repetition detection, transformers 5)")
    hub = {"revision": str(family.revision)} if model_dir is None and family.size == "real" and family.get("revision") \
        and not Path(str(family.pretrained)).is_dir() else {}  # as families.hub_kwargs: the pinned commit
    return vllm.LLM(model=str(model_dir or family.pretrained), **engine_kwargs(family, gens), **hub, **engine)


def release(llm) -> None:
    """Free the engine's GPU memory before the next stage trains (vLLM has no LLM.shutdown)."""
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    cleanup_dist_env_and_memory()


CHECKS_PER_CONFIRMATION = 4  # the trigger fires at a quarter of LoopStop's copy count (below)


def repetition_detection(rule: dict, budget: int) -> dict:
    """vLLM's trigger for LoopStop's test: a pattern of 1..size tokens repeated `min_count` times
    back to back. LoopStop cuts a loop once its pattern has run `min_copies` times (and, with
    min_run, spans that share of the budget), so the trigger asks for a quarter of those copies:
    a loop whose tokens hold up to four copies of its pattern each triggers by the time LoopStop
    would cut it (give or take the token where the loop begins; on the stand-ins' one-character
    tokens, tests/test_loopstop.py), and a false alarm, checked and continued, costs a few of them
    (a token holding more copies, e.g. a 16-dot token, triggers later); min_run's part keeps
    min_count x size <= the loop length it waits for, as before. With the line rule on, a quarter
    of its character limit, when fewer: an in-line run of a one- or two-token pattern triggers by
    the time LoopStop cuts it."""
    run = run_tokens(rule.get("min_run", 0.0), budget)
    size = max(1, min(64, run // rule["min_repeats"])) if run else 64
    copies = rule.get("min_copies", 0) // CHECKS_PER_CONFIRMATION
    limit = inline_limit(rule.get("line_chars"), rule.get("max_lines"))
    if limit:
        copies = min(copies, limit // CHECKS_PER_CONFIRMATION)
    count = max(2, rule["min_repeats"], run // size, copies)
    return {"min_pattern_size": 1, "max_pattern_size": size, "min_count": count}


def sampling_kwargs(gen: DictConfig, n: int = 1, seed: int | None = None, tokenizer=None) -> dict:
    """SamplingParams arguments for degenbench's decoding settings: every one explicit."""
    if gen.get("inherit"):
        raise ValueError(f"generation.backend=vllm cannot inherit {list(gen.inherit)} from the checkpoint; "
                         "set the values in degenbench's config instead")
    if not gen.do_sample and n > 1:
        raise ValueError(f"{n} samples of a page with greedy decoding are one sample; set do_sample")
    kw = dict(n=n, max_tokens=gen.max_new_tokens, seed=seed, repetition_penalty=gen.repetition_penalty,
              skip_special_tokens=True)
    if gen.do_sample:
        kw |= dict(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k or 0)
    else:
        kw |= dict(temperature=0.0)
    if gen.no_repeat_ngram_size:  # NGramPerReqLogitsProcessor's per-request settings; no window: the whole output
        kw["extra_args"] = {"ngram_size": int(gen.no_repeat_ngram_size),
                            "window_size": int(gen.get("ngram_window") or gen.max_new_tokens)}
        if gen.get("ngram_whitelist"):  # token ids where a tokenizer is given, else as named (a record)
            kw["extra_args"]["whitelist_token_ids"] = (
                whitelist_ids(tokenizer, gen.ngram_whitelist) if tokenizer is not None else list(gen.ngram_whitelist))
    if gen.get("loop_stop"):
        kw["repetition_detection"] = repetition_detection(OmegaConf.to_container(gen.loop_rule, resolve=True),
                                                          gen.max_new_tokens)
    return kw


def sampling_params(gen: DictConfig, n: int = 1, seed: int | None = None, max_tokens: int | None = None,
                    tokenizer=None):
    from vllm import SamplingParams
    from vllm.sampling_params import RepetitionDetectionParams

    kw = sampling_kwargs(gen, n, seed, tokenizer)
    if max_tokens is not None:
        kw["max_tokens"] = max_tokens
    if "repetition_detection" in kw:
        kw["repetition_detection"] = RepetitionDetectionParams(**kw["repetition_detection"])
    return SamplingParams(**kw)


def decoding_record(gen: DictConfig, n: int = 1) -> dict:
    return {"backend": "vllm", "applied": sampling_kwargs(gen, n), "engine": {"generation_config": "vllm"}}


def generate(llm, processor, family: DictConfig, images, gen: DictConfig, num_return_sequences: int = 1,
             seed: int | None = None) -> list[Output]:
    """Row i * num_return_sequences + j is page i's j-th sample, as in the HF backend."""
    tok = processor.tokenizer
    prompts = [tok(processor.apply_chat_template(messages(family, im), tokenize=False, add_generation_prompt=True),
                   add_special_tokens=False).input_ids for im in images]
    rule = OmegaConf.to_container(gen.loop_rule, resolve=True)
    start = time.perf_counter()
    results = llm.generate([{"prompt_token_ids": p, "multi_modal_data": {"image": im}} for p, im in zip(prompts, images)],
                           sampling_params(gen, num_return_sequences, seed, tokenizer=tok), use_tqdm=False)
    rows = [(i, list(c.token_ids), c.finish_reason) for i, r in enumerate(results) for c in r.outputs]
    outs = []
    for k, (i, ids, reason) in enumerate(rows):
        while reason == "repetition" and not loop_cut(tok.decode(ids, skip_special_tokens=True),
                                                      text_lengths(tok, ids), rule, gen.max_new_tokens):
            # a false alarm of the trigger: continue the row from where vLLM stopped it
            left = gen.max_new_tokens - len(ids)
            (more,) = llm.generate([{"prompt_token_ids": prompts[i] + ids, "multi_modal_data": {"image": images[i]}}],
                                   sampling_params(gen, 1, None if seed is None else seed + k + len(ids), left, tok),
                                   use_tqdm=False)
            ids, reason = ids + list(more.outputs[0].token_ids), more.outputs[0].finish_reason
        outs.append((ids, reason))
    seconds = (time.perf_counter() - start) / max(1, len(rows))
    return [Output(text=tok.decode(ids, skip_special_tokens=True), token_ids=ids, new_tokens=len(ids),
                   hit_limit=reason == "length", seconds=seconds, loop_stopped=reason == "repetition",
                   inputs={"prompt_tokens": len(prompts[i])})
            for (i, _, _), (ids, reason) in zip(rows, outs)]
