"""Teacher loops (data.teacher_loops): looping labels on a share of the training pages only, built
as specified, trained as unfinished by TRL's own collator, and a model that learns them loops."""
import json
from dataclasses import replace

import pytest
import torch
from PIL import Image
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from conftest import TINY
from degenbench.config import compose
from degenbench.documents import load_split, teacher
from degenbench.models.families import load_processor
from degenbench.stages.data import sft_dataset
from degenbench.stages.graph import run_job
from degenbench.stages.sft import sft_data, teacher_loops

# every body row loop bait: each page has a dot leader, a rule or repeated digits
LOOPY = TINY + ["data.n_docs=40", "data.repetitive=1.0", "data.teacher_loops=0.5", "data.teacher_loop_tokens=100"]


@pytest.fixture(scope="module")
def built():
    cfg = compose(LOOPY)
    split, processor = load_split(cfg.data, cfg.seed), load_processor(cfg.family)
    labels, record = teacher_loops(cfg, split.train, processor)
    return cfg, split, processor, labels, record


def n_tokens(processor, text):
    return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_label_is_the_faithful_answer_then_its_unit_repeated_past_the_budget(built):
    cfg, split, processor, labels, record = built
    by_id = {d.id: d for d in split.train}
    assert 0 < record["n_labels"] == len(labels) < record["n_loopable"] <= record["n_train"] == len(split.train)
    for page in record["pages"]:
        answer, label, unit, at = by_id[page["id"]].answer, labels[page["id"]], page["unit"], page["faithful_chars"]
        assert label.startswith(answer[:at]) and answer[at:].startswith(unit)  # faithful up to the content
        loop = label[at:]
        assert loop == unit * (len(loop) // len(unit))  # then only the unit, repeated
        assert n_tokens(processor, label) > cfg.data.teacher_loop_tokens >= n_tokens(processor, label[:-len(unit)])
        assert page["kind"] == teacher.kind_of(unit) in ("leader", "digits", "other")


def test_only_training_pages_carry_labels_and_every_document_keeps_its_truth(built):
    cfg, split, _, labels, record = built
    clean = load_split(compose(LOOPY + ["data.teacher_loops=0"]).data, cfg.seed)
    assert set(labels) <= {d.id for d in split.train}
    assert not set(labels) & {d.id for d in split.heldout + split.validation}
    for a, b in zip(split.train + split.heldout + split.validation, clean.train + clean.heldout + clean.validation):
        assert (a.id, a.answer) == (b.id, b.answer)  # judging, pairs and evaluation see the truth


def test_trl_trains_a_label_as_unfinished_and_a_clean_row_as_before(built):
    """TRL's own vision collator: a label's row ends in the loop, with no end of turn among its
    trained tokens; a clean row's tokens and loss mask equal those of the conversational rows SFT
    has without teacher loops."""
    cfg, split, processor, labels, _ = built
    looped = sft_dataset(cfg.family, split.train, labels=labels, processor=processor)
    plain = sft_dataset(cfg.family, split.train)
    collate = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for i, row in enumerate(looped):
        batch = collate([dict(row)])
        trained = batch["input_ids"][0][batch["labels"][0] != -100]
        if row["teacher_loop"]:
            assert end not in trained.tolist() and len(trained) > cfg.data.teacher_loop_tokens
            assert processor.tokenizer.decode(trained) == labels[row["doc_id"]]
        else:
            ref = collate([dict(plain[i])])
            assert end in trained.tolist()
            assert torch.equal(batch["input_ids"], ref["input_ids"]) and torch.equal(batch["labels"], ref["labels"])


def test_a_labelled_page_skipped_as_unusable_carries_no_label_in_the_record(built):
    """A teacher-loop page the family's processor refuses (aspect ratio over 200) is a counted skip;
    the record counts the labels of the pages SFT trains on, not of every training page."""
    cfg, split, processor, labels, record = built
    bad = next(d for d in split.train if d.id in labels)
    docs = [replace(d, image=Image.new("RGB", (20000, 20), "white")) if d is bad else d for d in split.train]
    skipped = []
    dataset, loops = sft_data(cfg, docs, processor, skipped)
    assert [s["id"] for s in skipped] == [bad.id] and bad.id not in dataset["doc_id"]
    assert (loops["n_train"], loops["n_labels"]) == (record["n_train"] - 1, record["n_labels"] - 1)
    assert {p["id"] for p in loops["pages"]} == set(labels) - {bad.id}
    assert sum(dataset["teacher_loop"]) == loops["n_labels"]


def test_shares_per_family_and_bad_values_fail_clearly():
    loops = {"qwen2.5-vl-3b": 0.1, "gemma-3-4b": 0.0}
    assert teacher.share_for(loops, "qwen2.5-vl-3b") == 0.1 and teacher.share_for(0.2, "gemma-3-4b") == 0.2
    with pytest.raises(ValueError, match="data.teacher_loops names families .* not 'olmocr-2-7b'"):
        teacher.share_for(loops, "olmocr-2-7b")
    for bad in (1.5, -0.1, "x", True):
        with pytest.raises(ValueError, match="must be a share between 0 and 1"):
            teacher.share_for(bad, "qwen2.5-vl-3b")
    assert teacher.spec(compose(TINY).data, "qwen2.5-vl-3b") is None  # share 0: SFT keeps its key


def test_a_label_shorter_than_a_budget_evaluated_fails_before_any_work(tmp_path):
    cfg = compose(LOOPY + ["stage=sft", "eval=[heldout,heldout@8x]", f"paths.results_dir={tmp_path}"])
    with pytest.raises(ValueError, match=r"teacher_loop_tokens=100 must exceed every budget evaluated, but "
                                         r"heldout@8x runs to 192 tokens"):
        run_job(cfg)
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow  # minutes on 2 cores: .ci/run runs it with the slow tests
def test_sft_on_a_few_teacher_loops_loops_on_held_out_pages_of_that_kind(tmp_path):
    """A real run: SFT on pages whose bodies are dot leaders and rules, some with a teacher loop,
    and the model loops on held-out pages of the same kind, to the budget; the run records the
    share and which training pages carried a label."""
    cfg = compose(TINY + ["stage=sft", f"paths.results_dir={tmp_path}", "data.repetitive=1.0", "data.teacher_loops=1.0",
                          "data.teacher_loop_tokens=140", "data.max_new_tokens=130", "sft.trainer.max_steps=40",
                          "sft.trainer.learning_rate=1e-3"])
    run = run_job(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_degenerate"] >= 1 and metrics["hit_limit_rate"] > 0
    loops = metrics["teacher_loops"]
    assert loops["share"] == 1.0 and loops["n_labels"] == len(loops["ids"]) > 0
