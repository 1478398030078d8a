"""The LLM judge: reply parsing, and the real judge end to end on tiny models whose greedy reply is
fixed by their weights (no mock: the judge loads, prompts and decodes them as any checkpoint)."""
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from degenbench.config import PACKAGE, compose
from degenbench.documents import synthetic
from degenbench.stages.judge import build, judge_candidates, parse_score

STANDIN = str(PACKAGE / "standins" / "qwen2.5-vl-3b")  # the shipped tiny Qwen2.5-VL: its tokenizer, template, processor


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine they cost seconds a call."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("reply, score", [
    ("Score: 7", 7), ("7/10", 7), ("7", 7), ('{"score": 7}', 7), ('```json\n{"score": 8}\n```', 8),
    ("score of 7 out of 10", 7), ("I give it a 9.", 9), ('Sure: {"score": 6', 6), ("0", 0), ("10/10", 10),
    ("7.5", 7.5), ("Score: 7/10. Score: 7", 7), ("Score: 7 (criterion 2 fails)", 7),
])
def test_parse_score_reads_a_clearly_stated_score(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", [
    "12", "-3", "Score: -3", '{"score": 11}', "11/10", "7/5",            # out of range, other scale
    "between 6 and 8", "6-8", "Score: 6 to 8", "Score: 7, score: 8",   # ambiguous
    '{"score": "7"}', '{"score": true}', '{"grade": 7}', '{"score": NaN}', "no number", "",  # no score
])
def test_parse_score_rejects_unclear_or_out_of_range_replies(reply):
    assert parse_score(reply) is None


def test_parse_score_scale():
    assert parse_score("4/5", scale=5) == 4 and parse_score("7", scale=5) is None


def fixed_reply_model(model, tokenizer, prompt_end: int, reply: str, out):
    """Rewire `model` into a bigram machine whose greedy reply after `prompt_end` (the generation
    prompt's last token) is `reply`, then the end-of-turn token: every layer's output projection
    is zeroed (the final hidden state is the current token's embedding), each chain token gets its
    own axis of the embedding, and the (untied) head maps that axis to the next token."""
    ids = tokenizer(reply, add_special_tokens=False).input_ids
    chain, nxt = [prompt_end, *ids], [*ids, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert len(set(chain)) == len(chain), "a bigram machine needs distinct tokens"
    emb, hidden = model.get_input_embeddings().weight, model.get_decoder().norm.weight.shape[0]
    head = torch.zeros(emb.shape[0], hidden)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if name.endswith(("o_proj", "down_proj")):
                mod.weight.zero_()
        model.get_decoder().norm.weight.fill_(1.0)
        for axis, (a, b) in enumerate(zip(chain, nxt)):
            emb[a] = torch.nn.functional.one_hot(torch.tensor(axis), hidden).float()
            head[b, axis] = 1.0
    model.get_output_embeddings().weight = torch.nn.Parameter(head)
    for c in (model.config, model.config.get_text_config()):
        c.tie_word_embeddings = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def vlm_judge(tmp_path_factory):
    """The tiny stand-in VLM, replying "Score: 7" whatever it is shown (a bigram machine needs a reply
    of distinct tokens: with one token per character, no repeated character)."""
    processor = AutoProcessor.from_pretrained(STANDIN)
    end = processor.tokenizer(processor.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                            add_generation_prompt=True)).input_ids[-1]
    path = fixed_reply_model(AutoModelForImageTextToText.from_pretrained(STANDIN), processor.tokenizer, end,
                             "Score: 7", tmp_path_factory.mktemp("vlm-judge"))
    processor.save_pretrained(path)
    return path


def received(judge, doc, text):
    """quality(doc, text), and the prompt ids and page the model received in its first forward pass."""
    seen = {}

    def hook(_, args, kwargs):
        seen.setdefault("ids", kwargs["input_ids"][0].tolist())
        # the page, as pixels or (transformers 5.2x) as the vision tower's output encoded before the loop
        seen.setdefault("page", kwargs.get("pixel_values") is not None or "image" in (kwargs.get("mm_encoder_outputs") or {}))
    handle = judge.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        return judge.quality(doc, text), seen
    finally:
        handle.remove()


@pytest.mark.parametrize("use_reference", [True, False])
def test_vlm_judge_sees_page_and_reference_through_its_template(vlm_judge, use_reference):
    cfg = compose(["judge=llm", f"judge.model={vlm_judge}", f"judge.use_reference={use_reference}"])
    judge = build(cfg.judge, device="cpu")
    doc = synthetic.generate(1, seed=0)[0]
    candidate = '{"header": "", "margin": "", "footer": "", "text": "a candidate"}'
    quality, seen = received(judge, doc, candidate)
    tok = judge.tokenizer
    image_tokens = seen["ids"].count(tok.convert_tokens_to_ids("<|image_pad|>"))
    prompt = tok.decode(seen["ids"])
    # what the model received is the rendered template, its one image placeholder expanded, nothing added
    assert prompt.replace("<|image_pad|>" * image_tokens, "<|image_pad|>") == judge.last_prompt
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>user\n<|vision_start|><|image_pad|>" in prompt and candidate in prompt
    assert seen["page"] and image_tokens == (doc.image.width // 28) * (doc.image.height // 28)
    assert (doc.answer in prompt) == use_reference and ("Reference transcription" in prompt) == use_reference
    assert judge.last_reply == "Score: 7" and quality == 0.7
    assert judge.counts() == {"judged": 1, "unparsed": 0}


def test_judge_candidates_records_replies_and_counts(vlm_judge):
    cfg = compose(["judge=llm", f"judge.model={vlm_judge}", "device=cpu", "judge.min_score=0.7"])
    doc = synthetic.generate(1, seed=0)[0]
    cands = pd.DataFrame({"doc_id": [doc.id] * 2, "candidate": [0, 1], "hit_limit": [False] * 2,
                          "text": [doc.answer, "x" * 40]})
    judged = judge_candidates(cfg, {doc.id: doc}, cands)
    assert judged["judge_reply"].tolist() == ["Score: 7"] * 2
    assert judged["judge_score"].tolist() == [7.0] * 2 and judged["quality"].tolist() == [0.7] * 2
    assert judged["good"].tolist() == [True, False]  # invalid JSON is never chosen
    assert judged.attrs["judge"] == {"judged": 2, "unparsed": 0}


@pytest.fixture(scope="module")
def text_judge(tmp_path_factory):
    """A tiny text-only causal LM (the stand-in's tokenizer and template) replying "Score:12" (no space:
    reloaded by AutoTokenizer for a qwen2 config, the character tokenizer lost "Score: 12"'s space)."""
    tok = AutoProcessor.from_pretrained(STANDIN).tokenizer
    config = AutoConfig.for_model("qwen2", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("text-judge")
    tok.save_pretrained(out), config.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)  # as the judge loads it (the class follows the config's model type)
    torch.manual_seed(0)
    end = tok(tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True),
              add_special_tokens=False).input_ids[-1]
    return fixed_reply_model(AutoModelForCausalLM.from_config(config), tok, end, "Score:12", out)


def test_text_judge_out_of_range_reply_is_counted_not_clamped(text_judge, caplog):
    """A text-only judge (no page) replying "Score:12": unparsed, scored 0, counted, logged."""
    cfg = compose(["judge=llm", f"judge.model={text_judge}", "device=cpu", "judge.page=false",
                   "judge.model_class=transformers.AutoModelForCausalLM"])
    docs = {d.id: d for d in synthetic.generate(1, seed=0)}
    cands = pd.DataFrame({"doc_id": list(docs), "candidate": [0], "hit_limit": [False],
                          "text": ['{"text": "a candidate"}']})
    with caplog.at_level(logging.WARNING):
        judged = judge_candidates(cfg, docs, cands)
    assert judged["judge_reply"].tolist() == ["Score:12"] and judged["judge_score"].isna().all()
    assert judged["quality"].tolist() == [0.0] and judged.attrs["judge"] == {"judged": 1, "unparsed": 1}
    assert "the llm judge gave no score for 1 of 1 candidates" in caplog.text


def test_judge_config_errors_name_the_field(text_judge):
    with pytest.raises(ValueError, match="judge.model is not set"):
        build(compose(["judge=llm"]).judge, device="cpu")
    with pytest.raises((OSError, ValueError), match="judge.page=true"):  # a text-only model cannot see the page
        build(compose(["judge=llm", f"judge.model={text_judge}"]).judge, device="cpu")
    with pytest.raises(ValueError, match="judge.model_class='transformers.NoSuchModel'"):
        build(compose(["judge=llm", f"judge.model={text_judge}",
                       "judge.model_class=transformers.NoSuchModel"]).judge, device="cpu")
