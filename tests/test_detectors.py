"""The field's loop detectors (degenbench/metrics/detectors.py) at their published thresholds, on
outputs whose answer is known: a loop, a table whose rows repeat and end, a short stutter."""
from degenbench.metrics import is_degenerate
from degenbench.metrics.detectors import compression, flags, repeat_detector, tail_repeats, token_pattern

PAGE = "Ata da reunião ordinária do conselho, realizada em 3 de março. "
LOOP = PAGE + "1.1.1.1." * 40          # a period-2 loop of 320 characters at the end
TABLE = PAGE + "| 10,00 | caixa |\n" * 12 + "Total: 120,00"   # repeated rows, then it ends
DOTS = "Sumário ......" + "." * 29     # 6 + 29 dots: one character repeated 35 times


def test_tail_repeats_counts_back_to_back_copies_at_the_end():
    assert tail_repeats("xabab", 2) == 2 and tail_repeats("abab", 3) == 1 and tail_repeats("a", 2) == 0


def test_olmocr_repeat_detector_wants_more_than_30_copies_of_a_short_tail():
    assert repeat_detector(LOOP)                  # "1." 160 times (n = 2)
    assert repeat_detector(DOTS)                  # "." 35 times (n = 1)
    assert not repeat_detector(DOTS[:-6])         # 29 dots: not more than 30
    assert not repeat_detector(TABLE)             # it ends on the total
    assert repeat_detector("a b  " * 20 + "a b " * 20) == repeat_detector("a b " * 40)  # whitespace folded
    assert not repeat_detector("ab1de" * 40 + "x")  # n = 5 repeated, then one more character


def test_vllms_token_pattern_is_a_repeated_pattern_at_the_end():
    ids = [7, 8, 9] + [4, 5] * 6
    assert token_pattern(ids, 1, 2, 6) and not token_pattern(ids, 1, 2, 7)
    assert not token_pattern(ids, 1, 1, 2)        # size 1: the last two tokens differ
    assert token_pattern([3] * 5, 1, 4, 5)


def test_whisper_compression_ratio_above_2_4():
    assert compression(LOOP) and not compression(PAGE)


def test_detectors_disagree_where_the_rule_asks_for_the_limit():
    """A table whose rows repeat and that ended on its own: the rule (limit required) and
    olmOCR's tail test do not flag it; the compression ratio does: a false positive."""
    ids = [ord(c) for c in TABLE]
    f = flags(TABLE, ids, {"min_pattern_size": 1, "max_pattern_size": 32, "min_count": 4})
    assert f == {"flag_repeat_detector": False, "flag_token_pattern": False, "flag_compression": True}
    assert not is_degenerate(TABLE, hit_limit=False)
    g = flags(LOOP, [ord(c) for c in LOOP], {"min_pattern_size": 1, "max_pattern_size": 32, "min_count": 4})
    assert all(g.values()) and is_degenerate(LOOP, hit_limit=True)


def test_the_detectors_table_counts_agreement_loners_and_false_positives():
    """Four pages: a loop all flag; a table of repeated rows that ended, flagged by compression
    alone (a false positive on a repetitive page); two plain pages nobody flags."""
    import pandas as pd

    from degenbench.analysis.detectors import DETECTORS, table

    flags = pd.DataFrame({"repetitive": [False, True, False, False], "ended": [False, True, True, True],
                          "rule": [True, False, False, False], "repeat_detector": [True, False, False, False],
                          "token_pattern": [True, False, False, False], "compression": [True, True, False, False]})
    t = table(flags).set_index("detector")
    assert list(t.index) == DETECTORS and t.flagged.tolist() == [1, 1, 1, 2]
    assert t.alone.tolist() == [0, 0, 0, 1]
    assert t.false_pos_repetitive.tolist() == [0, 0, 0, 1] and t.n_repetitive_ended.iloc[0] == 1
    assert t.loc["rule", "kappa_repeat_detector"] == 1.0
    assert round(t.loc["rule", "kappa_compression"], 3) == 0.5   # 3 of 4 agree; chance 0.5


def test_runs_record_each_detectors_flag_and_the_table_reads_them(chain):
    """The shared chain's runs were generated with the flags recorded per page (on the generated
    token ids); page_flags takes them as recorded."""
    from degenbench.analysis.detectors import page_flags
    from degenbench.analysis.runs import load_predictions, load_runs
    from degenbench.metrics.detectors import flags as detector_flags

    runs = load_runs(chain.root / "runs")
    runs = runs[runs.stage != "reference"]
    preds = load_predictions(runs)
    assert {"flag_repeat_detector", "flag_token_pattern", "flag_compression"} <= set(preds.columns)
    f = page_flags(runs, preds)
    assert len(f) == len(preds) and f.rule.tolist() == preds.degenerate.tolist()
    assert f.compression.tolist() == [detector_flags(t, [], {"min_pattern_size": 1, "max_pattern_size": 1,
                                                              "min_count": 2})["flag_compression"] for t in preds.prediction]
