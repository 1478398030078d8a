"""Property-based tests: the metrics and the degeneration rule take any text a model can emit
(empty, control characters, any script, long loops) without crashing, and keep their invariants."""
import json
import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from degenbench.config import compose
from degenbench.documents.record import FIELDS, make_document, plain_text, truth_json
from degenbench.metrics import (compression_ratio, cer, is_degenerate, loop_period_onset, ned,
                                paper_score, parse_prediction, score_output, seq_rep_n)
from degenbench.metrics import settings as metric_settings

FAST = settings(max_examples=150, deadline=None)
# Any Unicode a decoder can emit: control characters included, lone surrogates not (no tokenizer
# decodes to one, and they cannot be written out as UTF-8 at all).
CHARS = st.characters(blacklist_categories=("Cs",))
TEXT = st.text(CHARS, max_size=300)
# A model's loop: a short unit repeated many times, after an arbitrary prefix; brackets included,
# since a loop of "[" or "{" nests deeper than a JSON decoder's recursion limit.
UNIT = st.one_of(st.text(CHARS, min_size=1, max_size=6), st.sampled_from(["[", "{", '{"text": "', "\\"]))
LOOP = st.builds(lambda prefix, unit, k: prefix + unit * k, st.text(CHARS, max_size=40), UNIT,
                 st.one_of(st.integers(1, 20), st.integers(1000, 3000)))  # short and token-limit long
OUTPUT = st.one_of(TEXT, LOOP)
METRICS = metric_settings(compose([]).metrics)


@FAST
@given(OUTPUT, st.integers(0, 40), st.integers(0, 8))
def test_output_that_stopped_on_its_own_is_never_degenerate(text, tail_chars, min_repeats):
    assert is_degenerate(text, False, tail_chars, min_repeats) is False
    assert isinstance(is_degenerate(text, True, tail_chars, min_repeats), bool)


@FAST
@given(st.text(CHARS, max_size=40), st.text(CHARS, min_size=1, max_size=40), st.integers(1, 30),
       st.integers(1, 6), st.integers(0, 10))
def test_enough_copies_of_a_long_enough_unit_meet_the_rule_at_the_limit(prefix, unit, tail_chars,
                                                                       min_repeats, extra):
    unit = (unit * tail_chars)[:max(len(unit), tail_chars)]  # at least tail_chars long
    text = prefix + unit * (min_repeats + extra)
    assert is_degenerate(text, True, tail_chars, min_repeats)


@FAST
@given(OUTPUT, st.integers(0, 250))
@example("abcabcabc", 200)
def test_loop_period_is_a_real_period_of_the_tail(text, max_period):
    period, onset = loop_period_onset(text, max_period)
    if period is None:
        assert onset is None
        return
    tail = text[onset:]
    assert 1 <= period <= max_period and 0 <= onset and len(tail) >= 2 * period
    assert tail[period:] == tail[:-period]  # the tail repeats with this period throughout


@FAST
@given(st.text(CHARS, max_size=20), st.text(CHARS, min_size=1, max_size=10), st.integers(2, 30))
def test_a_repeated_unit_is_found_as_a_loop_at_least_as_long(prefix, unit, k):
    period, onset = loop_period_onset(prefix + unit * k, max_period=10)
    # the longest periodic tail wins: the loop itself, or a longer one the prefix extends
    assert period is not None and onset <= len(prefix)


@FAST
@given(st.lists(st.integers(0, 5), max_size=300), st.integers(1, 6))
def test_seq_rep_n_is_a_share_below_one(tokens, n):
    rep = seq_rep_n(tokens, n)
    assert 0 <= rep < 1
    assert seq_rep_n(list(range(len(tokens))), n) == 0  # all n-grams distinct


@FAST
@given(OUTPUT)
def test_compression_ratio_is_finite_and_zero_only_when_empty(text):
    ratio = compression_ratio(text)
    assert math.isfinite(ratio) and ratio >= 0 and (ratio == 0) == (text == "")


@FAST
@given(TEXT.filter(str.strip), OUTPUT)
def test_quality_metrics_are_in_range_and_perfect_on_identical_text(truth, pred):
    assert cer(truth, pred) >= 0 and cer(truth, truth) == 0
    assert 0 <= ned(truth, pred) <= 1 and ned(truth, truth) == 0
    assert 0 <= paper_score(truth, pred) <= 1 and paper_score(truth, truth) == 1


@FAST
@given(OUTPUT)
@example("[" * 5000)  # found: json.loads raised RecursionError, crashing the document's scoring
def test_any_output_parses_to_fields_or_plain_text(output):
    fields, plain = parse_prediction(output)
    assert isinstance(plain, str)
    assert fields is None or set(fields) == set(FIELDS)


@FAST
@given(st.fixed_dictionaries({k: TEXT for k in FIELDS}), st.data())
def test_an_answer_round_trips_and_any_cut_of_it_is_salvaged(fields, data):
    answer = truth_json(fields)
    assert parse_prediction(answer) == (fields, plain_text(fields))
    cut = data.draw(st.integers(0, len(answer) - 1))
    got, plain = parse_prediction(answer[:cut])  # a loop cut by the token limit mid-answer
    assert got is None and isinstance(plain, str)


@FAST
@given(TEXT.filter(str.strip), OUTPUT, st.booleans(), st.booleans(),
       st.lists(st.integers(0, 50), max_size=200))
def test_score_output_never_crashes_and_keeps_its_invariants(truth, output, hit_limit, loop_stopped, tokens):
    doc = make_document("d", json.dumps({"text": truth}), None, "test")
    row = score_output(doc, output, hit_limit, tokens, METRICS, loop_stopped)
    assert row["degenerate"] is False or hit_limit or loop_stopped
    assert 0 <= row["ned"] <= 1 and 0 <= row["score"] <= 1 and row["cer"] >= 0
    assert 0 <= row["seq_rep_n"] < 1
    perfect = score_output(doc, doc.answer, False, tokens, METRICS)
    assert perfect["json_valid"] and perfect["cer"] == perfect["cer_text"] == 0 and perfect["score"] == 1
