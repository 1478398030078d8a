"""vLLM backend (`pip install degenbench[vllm]`, `generation.backend=vllm`): the same pages, chat
template and outputs as the HF backend, with vLLM's continuous batching; loop-aware stopping uses
vLLM's own repetition detection (SamplingParams.repetition_detection).

A LoRA stage is evaluated through a merged copy of the model (vLLM loads full weights); the
copy is built once next to the adapter, under the artifact store's rules.
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from degenbench.generate import Output, messages
from degenbench.metrics.degeneration import is_degenerate


def available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def load(family: DictConfig, model_dir: str | Path | None, **engine):
    """A vLLM engine on the stage's weights (None: the family's base)."""
    if not available():
        raise ImportError("generation.backend=vllm needs vLLM: pip install 'degenbench[vllm]' (on a "
                          "CUDA machine), or use generation.backend=hf")
    from vllm import LLM

    return LLM(model=str(model_dir or family.pretrained), dtype=family.dtype,
               trust_remote_code=bool(family.trust_remote_code), limit_mm_per_prompt={"image": 1},
               **engine)


def sampling_params(gen: DictConfig, n: int = 1, seed: int | None = None):
    from vllm import SamplingParams

    kw = dict(n=n, max_tokens=gen.max_new_tokens, seed=seed,
              temperature=gen.temperature if gen.do_sample else 0.0,
              top_p=(gen.top_p or 1.0) if gen.do_sample else 1.0)
    if gen.get("loop_stop"):
        from vllm.sampling_params import RepetitionDetectionParams

        # a loop of any period up to the rule's tail, repeated as often as the rule asks
        kw["repetition_detection"] = RepetitionDetectionParams(
            min_pattern_size=1, max_pattern_size=gen.loop_rule.tail_chars, min_count=gen.loop_rule.min_repeats)
    return SamplingParams(**kw)


def generate(llm, processor, family: DictConfig, images, gen: DictConfig, num_return_sequences: int = 1,
             seed: int | None = None) -> list[Output]:
    """Row i * num_return_sequences + j is page i's j-th sample, as in the HF backend."""
    prompts = [{"prompt": processor.apply_chat_template(messages(family, im), tokenize=False,
                                                        add_generation_prompt=True),
                "multi_modal_data": {"image": im}} for im in images]
    start = time.perf_counter()
    results = llm.generate(prompts, sampling_params(gen, num_return_sequences, seed), use_tqdm=False)
    seconds = (time.perf_counter() - start) / max(1, len(images) * num_return_sequences)
    outs = []
    for r in results:
        for c in r.outputs:
            length = c.finish_reason == "length"
            # vLLM ends a detected repetition before the limit; its finish reason is not the same in
            # every version, so a row that stopped early and meets the rule's tail test counts as cut
            cut = bool(gen.get("loop_stop")) and not length and \
                is_degenerate(c.text, True, gen.loop_rule.tail_chars, gen.loop_rule.min_repeats)
            outs.append(Output(text=c.text, token_ids=list(c.token_ids), new_tokens=len(c.token_ids),
                               hit_limit=length, seconds=seconds, loop_stopped=cut))
    return outs
