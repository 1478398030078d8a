"""Base pretraining data: style-A pages and their labels."""
import random

from degenbench import bases, standins
from degenbench.config import compose


def test_style_a_pages_answer_row_by_row_and_are_seeded():
    a = [bases.style_a_page(random.Random(5), 16, 4, k, 28) for k in (1, 4)]
    b = [bases.style_a_page(random.Random(5), 16, 4, k, 28) for k in (1, 4)]
    assert [x[1] for x in a] == [x[1] for x in b]
    assert a[0][0].size == (16 * 28, 4 * 28)
    assert len(a[0][1].split("\n")) == 1 and len(a[1][1].split("\n")) == 4
    assert all(len(line) <= 16 for line in a[1][1].split("\n"))


def test_labels_cover_exactly_the_answer_and_the_end_of_turn():
    for name in ("qwen2.5-vl-3b", "gemma-3-4b"):
        fam = compose([f"family={name}"]).family
        _, processor = standins._init(fam)
        enc = bases._batch(processor, random.Random(0), 3, fam.standin.page, 2, fam.prompt)
        tok = processor.tokenizer
        for ids, labels, mask in zip(enc["input_ids"], enc["labels"], enc["attention_mask"]):
            kept = labels[labels != -100]
            first = int((labels != -100).nonzero()[0])
            assert tok.decode(kept).endswith(tok.eos_token) and len(kept) > 2
            assert tok.decode(ids[:first]).endswith(("assistant\n", "model\n"))  # the prompt is not trained on
            assert (ids[labels != -100] == kept).all()  # labels are the tokens themselves, in place
            assert not (labels[mask == 0] != -100).any()  # no loss on padding
