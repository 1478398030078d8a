"""Base pretraining data: style-A pages and their labels."""
import random

from transformers import AutoProcessor

from degenbench.models import pretrain, standins, tokenizer
from degenbench.config import compose


def test_style_a_pages_answer_row_by_row_and_are_seeded():
    a = [pretrain.style_a_page(random.Random(5), 16, 4, k, 28) for k in (1, 4)]
    b = [pretrain.style_a_page(random.Random(5), 16, 4, k, 28) for k in (1, 4)]
    assert [x[1] for x in a] == [x[1] for x in b]
    assert a[0][0].size == (16 * 28, 4 * 28)
    assert len(a[0][1].split("\n")) == 1 and len(a[1][1].split("\n")) == 4
    assert all(len(line) <= 16 for line in a[1][1].split("\n"))
    strip, answer = pretrain.style_a_page(random.Random(5), 16, 4, 0, 28, crop=2)  # a strip of 2 rows
    assert strip.size == (16 * 28, 2 * 28) and len(answer.split("\n")) == 2


def test_char_tokenizer_gives_one_token_per_character_and_never_an_unknown():
    for arch in ("qwen2_5_vl", "gemma3"):
        tok = tokenizer.char_tokenizer(arch)
        text = 'PREFEITURA DE NITERÓI\n{"text": "Nº 12 ...."}'
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text) and tok.decode(ids) == text
        odd = "☃ 漢"  # outside the character set: its UTF-8 bytes, decoded back
        assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd
        assert tok.convert_ids_to_tokens(tok(tok.eos_token, add_special_tokens=False)["input_ids"]) == [tok.eos_token]


def test_lr_warms_up_stays_flat_then_decays_to_a_tenth():
    f = [pretrain.lr_factor(k, 400, 50) for k in range(400)]
    assert f[0] == 1 / 50 and f[49] == 1.0 and f[299] == 1.0 and f[200] == 1.0
    assert 0.1 <= f[-1] < 0.11 and all(a >= b for a, b in zip(f[300:], f[301:]))


def test_labels_cover_exactly_the_answer_and_the_end_of_turn():
    for name in ("qwen2.5-vl-3b", "gemma-3-4b"):
        fam = compose([f"family={name}"]).family
        processor = AutoProcessor.from_pretrained(standins.ensure(fam))  # the shipped base's
        stage = fam.standin.base.stages[-1]
        enc = pretrain._batch(processor, random.Random(0), 3, fam.standin.page, stage, fam.prompt)
        tok = processor.tokenizer
        for ids, labels, mask in zip(enc["input_ids"], enc["labels"], enc["attention_mask"]):
            kept = labels[labels != -100]
            first = int((labels != -100).nonzero()[0])
            assert tok.decode(kept).endswith(tok.eos_token) and len(kept) > 2
            assert tok.decode(ids[:first]).endswith(("assistant\n", "model\n"))  # the prompt is not trained on
            assert (ids[labels != -100] == kept).all()  # labels are the tokens themselves, in place
            assert not (labels[mask == 0] != -100).any()  # no loss on padding
