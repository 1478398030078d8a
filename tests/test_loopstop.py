"""LoopStop's rule as configured (generation.loop_rule): a loop is cut within a few tokens of the
tail test whatever the budget, an in-line run as soon as it outgrows the page's line, a page of
legitimately identical rows that ends is not, and vLLM's trigger, derived from the same rule, fires
no later than LoopStop cuts. Tokenizer only, no model."""
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from degenbench.config import compose
from degenbench.decoding.loopstop import LoopStop, loop_cut, text_lengths
from degenbench.decoding.vllm import repetition_detection
from degenbench.documents import Document
from degenbench.metrics import score_output
from degenbench.stages.judge import judge_candidates
from degenbench.metrics.degeneration import is_degenerate
from degenbench.metrics.detectors import token_pattern
from degenbench.models import families

BUDGET = 4096
HEAD = '{"header": "ATA Nº 7/2024", "margin": "", "footer": "", "text": "'
ROW = "Item 12 .......... R$ 10,00\\n"  # one row of a ledger, as the JSON answer writes it


@pytest.fixture(scope="module")
def setup():
    cfg = compose(["family=qwen2.5-vl-3b"])
    tok = families.load_processor(cfg.family).tokenizer
    rule = OmegaConf.to_container(cfg.generation.loop_rule, resolve=True)
    return tok, tok.convert_tokens_to_ids("<|im_end|>"), rule


def first_cut(tok, eos, rule, ids):
    """The number of tokens at which LoopStop, fed `ids` a token at a time, cuts the row (None: never)."""
    stop = LoopStop(tok, 1, {eos}, **rule, budget=BUDGET)
    return next((k for k in range(1, len(ids) + 1) if stop(torch.tensor([[0] + ids[:k]]), None)[0]), None)


def test_a_loop_is_cut_soon_after_the_tail_test_and_a_48_row_table_that_ends_is_not(setup):
    tok, eos, rule = setup
    rule = rule | {"max_lines": None}  # the copies rule alone (the line rule: the next test)
    dots = tok(HEAD + "Soma " + "." * 600, add_special_tokens=False).input_ids  # a dot run to the limit
    table = tok(HEAD + "Abertura\\n" + ROW * 48 + 'Total R$ 480,00"}', add_special_tokens=False).input_ids + [eos]
    rows = tok(HEAD + "Abertura\\n" + ROW * 150, add_special_tokens=False).input_ids  # the same row, looping
    assert first_cut(tok, eos, rule, table) is None
    tail = next(k for k in range(1, len(dots)) if is_degenerate(tok.decode(dots[:k]), True))  # the rule's own test
    cut = first_cut(tok, eos, rule, dots)  # one dot a copy: cut at min_copies dots, or at the tail test if later
    dots_at_cut = max(rule["min_copies"], rule["tail_chars"] * rule["min_repeats"])
    assert tok.decode(dots[:cut]).count(".") == dots_at_cut and cut - tail <= 8, (cut, tail)
    cut = first_cut(tok, eos, rule, rows)  # rows are copies: cut once the row has run min_copies times
    assert rule["min_copies"] <= tok.decode(rows[:cut]).count("Item") <= rule["min_copies"] + 1
    for ids in (dots, rows):  # the decision replayed on a whole text (vLLM's confirmation, audits) agrees
        k = first_cut(tok, eos, rule, ids)
        lengths = text_lengths(tok, ids)
        text = tok.decode(ids)
        assert loop_cut(text[:lengths[k - 1]], lengths[:k], rule, BUDGET)
        assert not loop_cut(text[:lengths[k - 2]], lengths[:k - 1], rule, BUDGET)


def test_the_line_rule_cuts_an_in_line_run_once_it_outgrows_the_pages_line(setup):
    """On the toy's pages (data.cols characters a line) a dot run is cut once it is longer than
    max_lines of them, long before the tail test; one that fits and ends, and rows of a table
    (line breaks between them), are not cut by it."""
    tok, eos, rule = setup
    limit = round(rule["line_chars"] * rule["max_lines"])
    assert rule["line_chars"] == compose([]).data.cols and limit < rule["tail_chars"] * rule["min_repeats"]
    dots = tok(HEAD + "Soma " + "." * 600, add_special_tokens=False).input_ids
    cut = first_cut(tok, eos, rule, dots)
    assert tok.decode(dots[:cut]).count(".") == limit + 1
    assert not is_degenerate(tok.decode(dots[:cut]), True)  # the paper's test has not fired yet
    within = tok(HEAD + "Soma " + "." * limit + ' 10,00"}', add_special_tokens=False).input_ids + [eos]
    assert first_cut(tok, eos, rule, within) is None
    rows = tok(HEAD + "Abertura\\n" + "Taxa 12,50\\n" * 40 + 'fim"}', add_special_tokens=False).input_ids + [eos]
    assert first_cut(tok, eos, rule, rows) is None
    lengths, text = text_lengths(tok, dots), tok.decode(dots)
    assert loop_cut(text[:lengths[cut - 1]], lengths[:cut], rule, BUDGET)
    assert not loop_cut(text[:lengths[cut - 2]], lengths[:cut - 1], rule, BUDGET)
    assert first_cut(tok, eos, rule | {"line_chars": None}, dots) > cut  # data without a page width: off
    # the cut row counts as degenerate although the tail test has not fired: evaluation and the judge
    cfg = compose([])
    truth = {"header": "ATA Nº 7/2024", "margin": "", "footer": "", "text": "Soma 10,00"}
    doc = Document(id="d", truth=truth, text="ATA Nº 7/2024\nSoma 10,00", image=Image.new("RGB", (64, 64), "white"))
    cut_text, cut_ids = tok.decode(dots[:cut]), dots[:cut]
    assert score_output(doc, cut_text, False, cut_ids, cfg.metrics, loop_stopped=True)["degenerate"]
    assert not score_output(doc, cut_text, False, cut_ids, cfg.metrics)["degenerate"]
    cands = pd.DataFrame([{"doc_id": "d", "text": cut_text, "hit_limit": False, "loop_stopped": True}])
    assert judge_candidates(cfg, {"d": doc}, cands)["degenerate"].tolist() == [True]


def test_tables_of_up_to_55_identical_rows_that_end_are_left_alone(setup):
    tok, eos, rule = setup
    rule = rule | {"line_chars": 64}  # these rows' pages are A4-like, 64 characters a line
    for row in (ROW, "Nome: ______________________________\\n", "0,00    0,00    0,00    0,00\\n", "Taxa 12,50\\n"):
        for n in (4, 16, 48, 55):
            ids = tok(HEAD + row * n + 'fim"}', add_special_tokens=False).input_ids + [eos]
            assert first_cut(tok, eos, rule, ids) is None, (row, n)


def test_vllms_trigger_fires_no_later_than_loopstop_cuts(setup):
    """vLLM stops a row on its repetition trigger and degenbench confirms it with loop_cut; a
    trigger later than LoopStop's cut would let the row run on past where HF cuts it."""
    tok, eos, rule = setup
    trigger = repetition_detection(rule, BUDGET)
    for body in ("Soma " + "." * 600, "Abertura\\n" + ROW * 150, "ab" * 400):
        ids = tok(HEAD + body, add_special_tokens=False).input_ids  # one token a character: the stand-ins'
        cut = first_cut(tok, eos, rule, ids)
        fired = next(k for k in range(1, len(ids) + 1) if token_pattern(ids[:k], trigger["min_pattern_size"],
                                                                        trigger["max_pattern_size"], trigger["min_count"]))
        assert cut is not None and fired <= cut, (body[:12], fired, cut)
