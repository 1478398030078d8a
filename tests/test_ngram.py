"""Windowed n-gram blocking (DeepSeek-OCR's rule, degenbench/decoding/ngram.py, mitigation=windowed_ngram):
a repeat is banned inside the window, allowed outside it, whitelisted tokens always allowed; the
settings reach HF generate and vLLM's SamplingParams, and the option is keyed apart."""
import pytest
import torch
from conftest import TINY

from degenbench.config import compose
from degenbench.decoding import mitigation
from degenbench.decoding import vllm as vllm_backend
from degenbench.decoding.generate import decoding, decoding_record, generate
from degenbench.decoding.ngram import WindowedNoRepeatNGram, banned, whitelist_ids
from degenbench.documents import synthetic
from degenbench.models.families import load_trained
from degenbench.stages.graph import Keys

#          0  1  2  3  4  5  6  7
ROW = [5, 6, 7, 9, 9, 9, 5, 6]   # ends in (5, 6): the 3-gram (5, 6, 7) began at 0


def close_repeats(ids: list[int], n: int, window: int) -> int:
    """How many n-grams recur while their earlier copy still starts within the last `window` tokens."""
    return sum(tuple(ids[j:j + n]) == tuple(ids[i:i + n])
               for j in range(1, len(ids) - n + 1) for i in range(max(0, j + n - 1 - window), j))


def test_a_repeat_is_banned_inside_the_window_and_allowed_outside():
    assert banned(ROW, 3, window=8) == {7}        # (5, 6, 7) lies within the last 8 tokens
    assert banned(ROW, 3, window=7) == set()       # it starts 8 back: outside a 7-token window
    assert banned(ROW, 2, window=8) == {7}        # bigrams after a 6: (6, 7) only
    assert banned([1, 1, 1], 2, window=3) == {1}  # a run of one token
    assert banned([4, 2], 3, window=10) == set()  # no n-gram complete yet


def test_the_processor_searches_only_the_output_and_honours_the_whitelist():
    prompt = [5, 6, 7]                               # the prompt holds (5, 6, 7): never a reason to ban
    ids = torch.tensor([prompt + [1, 5, 6, 1, 2], prompt + [5, 6, 7, 5, 6]])
    scores = torch.zeros(2, 10)
    out = WindowedNoRepeatNGram(3, 10, prompt_len=3)(ids, scores.clone())
    assert torch.isinf(out[1, 7]) and not torch.isinf(out[0]).any()
    kept = WindowedNoRepeatNGram(3, 10, prompt_len=3, whitelist={7})(ids, scores.clone())
    assert not torch.isinf(kept).any()
    with pytest.raises(ValueError, match="window >= n"):
        WindowedNoRepeatNGram(5, 4, prompt_len=0)


def test_settings_reach_hf_generate_and_the_output_obeys_the_window():
    """On the tiny Qwen2.5-VL stand-in at n 3: no 3-gram repeats within 12 output tokens; transformers'
    global blocking is off (the window replaces it); the run records the rule; a whitelisted
    token string must be one token."""
    over = TINY + ["data.max_new_tokens=48", "mitigation=windowed_ngram",
                   "mitigation.generation.no_repeat_ngram_size=3", "mitigation.generation.ngram_window=12"]
    cfg = compose(over)
    (g,) = mitigation.attempts(cfg.generation, cfg.mitigation)
    model, processor = load_trained(cfg.family, "cpu")
    pages = [d.load_image() for d in synthetic.generate(2, 0, cols=16, margin_cols=5, body_lines=2, repetitive_pages=1.0)]
    assert decoding(model, g).to_diff_dict().get("no_repeat_ngram_size", 0) == 0
    assert decoding_record(model, g)["applied"]["windowed_ngram"] == {"n": 3, "window": 12, "whitelist": []}
    blocked = generate(model, processor, cfg.family, pages, g)
    assert sum(close_repeats(o.token_ids, 3, 12) for o in blocked) == 0
    plain = compose(TINY + ["data.max_new_tokens=48"])
    assert sum(close_repeats(o.token_ids, 3, 12) for o in generate(model, processor, plain.family, pages,
                                                                     plain.generation)) > 0  # unblocked, it does
    assert whitelist_ids(processor.tokenizer, ["<|im_end|>"]) == {processor.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    with pytest.raises(ValueError, match="not one token"):
        whitelist_ids(processor.tokenizer, ["<td>"])


def test_settings_reach_vllm_sampling_params_and_keys_tell_it_apart():
    cfg = compose(["mitigation=windowed_ngram", "data.max_new_tokens=256",
                   "mitigation.generation.ngram_whitelist=['<|im_end|>']"])
    (g,) = mitigation.attempts(cfg.generation, cfg.mitigation)
    assert vllm_backend.sampling_kwargs(g)["extra_args"] == {"ngram_size": 12, "window_size": 36,
                                                            "whitelist_token_ids": ["<|im_end|>"]}
    model, processor = load_trained(compose(TINY).family, "cpu")
    ids = vllm_backend.sampling_kwargs(g, tokenizer=processor.tokenizer)["extra_args"]["whitelist_token_ids"]
    assert ids == {processor.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    assert vllm_backend.engine_kwargs(cfg.family, [g])["logits_processors"] == [vllm_backend.NGRAM_PROCESSOR]
    assert mitigation.label(cfg) == "windowed_ngram=12in36"
    from degenbench.documents.evalsets import eval_sets

    def eval_key(*o):
        c = compose(TINY + ["stage=vanilla", *o])
        return Keys(c).eval(c, eval_sets(c, None)[0])
    assert len({eval_key(), eval_key("mitigation=no_repeat_ngram"), eval_key("mitigation=windowed_ngram"),
                eval_key("mitigation=windowed_ngram", "mitigation.generation.ngram_window=24")}) == 4
