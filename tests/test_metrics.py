"""Metrics on hand-checked cases."""
import math

import pytest

from degenbench.documents.record import make_document
from degenbench.config import compose
from degenbench.metrics import (cer, compression_ratio, is_degenerate, loop_period_onset, ned,
                                paper_score, parse_prediction, score_output, seq_rep_n, settings, wilson)
from degenbench.metrics.text import field_cers

LOOP = '{"header": "OFÍCIO Nº 12", "text": "O servidor informa o processo nº 3 nº 3 nº 3' + " nº 3" * 40


def test_looped_output_meets_the_rule():
    # ran into the limit, and the last 15 characters " nº 3 nº 3 nº 3" occur many times
    assert is_degenerate(LOOP, hit_limit=True)
    assert LOOP.count(LOOP[-15:]) >= 4


def test_repetitive_table_that_stopped_is_not_degenerate():
    table = "Item | Qtd | Valor\n" + "Caneta | 1 | 2,00\n" * 12
    assert table.count(table[-15:]) >= 4  # as repetitive as a loop ...
    assert not is_degenerate(table, hit_limit=False)  # ... but it ended on its own
    assert is_degenerate(table, hit_limit=True)


def test_rule_thresholds_are_configurable():
    text = "abc" * 6  # "abcabcabcabcabcabc": last 15 chars occur once
    assert not is_degenerate(text, True)
    assert is_degenerate(text, True, tail_chars=3, min_repeats=6)
    assert not is_degenerate(text, True, tail_chars=3, min_repeats=7)
    assert not is_degenerate("short", True)  # shorter than the tail


def test_cer_exceeds_one_on_a_loop_while_ned_stays_bounded():
    truth = "Prefeitura de Santos"
    loop = truth + " Santos" * 20
    assert cer(truth, loop) == pytest.approx(140 / 20)
    assert cer(truth, loop) > 1
    assert 0 < ned(truth, loop) <= 1
    assert ned(truth, loop) == pytest.approx(140 / 160)


def test_cer_and_ned_hand_checked():
    assert cer("abcd", "abxd") == pytest.approx(0.25)
    assert ned("abcd", "abxd") == pytest.approx(0.25)
    assert cer("abcd", "") == 1.0
    with pytest.raises(ValueError, match="empty reference"):
        cer("", "abc")


def test_score_is_one_on_identical_strings_and_lower_otherwise():
    for s in ["OFÍCIO Nº 12/2020 A comissão informa o processo", "Visto", "a b"]:
        assert paper_score(s, s) == pytest.approx(1.0)
    assert paper_score("A comissão informa o processo", "A comissão aprova o processo") < 1
    assert paper_score("abc def", "") == 0.0


def test_loop_period_and_onset():
    assert loop_period_onset("Header: " + "ab" * 10) == (2, 8)
    assert loop_period_onset("x" + "nº 3 " * 10) == (5, 1)
    assert loop_period_onset("no loop here") == (None, None)


def test_seq_rep_and_compression_ratio():
    assert seq_rep_n([1, 2, 3, 4, 5, 6]) == 0.0
    assert seq_rep_n([7] * 10) == pytest.approx(1 - 1 / 7)
    assert seq_rep_n([1, 2]) == 0.0
    assert compression_ratio("ab" * 200) > 2.4 > compression_ratio("Prefeitura Municipal de Santos")


def test_wilson_interval():
    lo, hi = wilson(1, 10)
    assert lo == pytest.approx(0.01787, abs=1e-4) and hi == pytest.approx(0.40415, abs=1e-4)
    assert wilson(0, 32)[0] == 0.0 and wilson(32, 32)[1] == 1.0
    for n in range(1, 400):  # the interval holds the rate exactly, at any n (0 of 288 once did not)
        for k in (0, 1, n // 2, n):
            lo, hi = wilson(k, n)
            assert lo <= k / n <= hi
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_parse_prediction_valid_invalid_and_truncated():
    fields, plain = parse_prediction('{"header": "H", "margin": "", "footer": "F", "text": "a\\nb"}')
    assert fields == {"header": "H", "margin": "", "footer": "F", "text": "a\nb"}
    assert plain == "H\na\nb\nF"
    fields, plain = parse_prediction('{"header": "H", "text": "abc abc')  # cut by the limit
    assert fields is None and plain == "H\nabc abc"
    assert parse_prediction("plain words") == (None, "plain words")
    assert parse_prediction('{"header": "H"}')[0] is None  # keys missing: not valid schema JSON


def test_field_cers():
    doc = make_document("d", {"header": "AB", "text": "abcd"}, None, "test")
    got = field_cers(doc.truth, {"header": "AB", "margin": "x", "footer": "", "text": "abxd"})
    assert got == {"cer_header": 0.0, "cer_margin": None, "cer_footer": None, "cer_text": 0.25}
    # a field the output lacks (no JSON at all, or a loop cut before it) counts as empty: CER 1
    assert field_cers(doc.truth, {}) == {"cer_header": 1.0, "cer_margin": None, "cer_footer": None, "cer_text": 1.0}
    metrics = settings(compose([]).metrics)
    cut = score_output(doc, '{"header": "AB", "margin": "", "footer": "", "text": "ab', True, [], metrics)
    assert not cut["json_valid"] and (cut["cer_header"], cut["cer_text"]) == (0.0, 0.5)


def test_per_field_cer_survives_the_parquet_round_trip(tmp_path):
    """Evaluation keeps its rows as parquet shards and summarises what it reads back: a field CER
    a row lacks (its output was no JSON) comes back as NaN, and must not make the mean NaN."""
    from degenbench.metrics import summarize
    from degenbench.stages.store import Shards

    row = dict(degenerate=False, hit_limit=False, loop_stopped=False, json_valid=True, cer=0.2, ned=0.1,
               score=0.9, new_tokens=10, seconds=0.5, cer_header=0.0, cer_margin=0.5, cer_footer=0.25, cer_text=0.4)
    broken = row | dict(json_valid=False, cer=1.0, cer_header=None, cer_margin=None, cer_footer=None, cer_text=None)
    shards = Shards(tmp_path, 1, "test")
    shards.put(0, [row, broken, row | {"cer_text": 0.6}])
    rows, _ = shards.read()
    assert rows.cer_text.isna().sum() == 1  # what parquet gives back
    summary = summarize(rows.to_dict("records"), [])
    assert (summary["cer_header"], summary["cer_margin"], summary["cer_footer"]) == (0.0, 0.5, 0.25)
    assert summary["cer_text"] == pytest.approx(0.5) and summary["cer"] == pytest.approx(1.4 / 3)


def test_cer_apart_from_loops_leaves_the_degenerate_pages_out():
    from degenbench.metrics import summarize

    row = dict(degenerate=False, hit_limit=False, json_valid=True, cer=0.02, ned=0.02, score=0.95, new_tokens=10,
               seconds=0.5)
    rows = [row, row | {"cer": 0.04}, row | {"degenerate": True, "hit_limit": True, "cer": 2.5}]
    s = summarize(rows, [])
    assert s["cer"] == pytest.approx(2.56 / 3) and s["cer_not_degenerate"] == pytest.approx(0.03)
    assert math.isnan(summarize(rows[2:], [])["cer_not_degenerate"])  # every page looped: no such mean
