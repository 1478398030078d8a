"""Report arithmetic on small real inputs: the paper's relative-reduction figures."""
import math

import pandas as pd

from degenbench.analysis import reductions, relative_reduction


def test_paper_rates_give_the_papers_reductions():
    assert f"{relative_reduction(0.0161, 0.0020):.1%}" == "87.6%"  # Nanonets-OCR2-3B, SFT -> DPO
    assert f"{relative_reduction(0.0323, 0.0141):.1%}" == "56.3%"  # Qwen2.5-VL-3B, SFT -> DPO
    assert math.isnan(relative_reduction(0.0, 0.0))  # nothing looped: no reduction is defined


def test_reductions_take_each_familys_best_beta_and_average_the_defined_ones():
    vs = pd.DataFrame({"family": ["a", "a", "b", "c"], "from": ["sft"] * 4, "beta": [0.1, 0.5, 0.1, 0.1],
                       "deg_from": [0.04, 0.04, 0.02, 0.0], "deg_to": [0.01, 0.02, 0.01, 0.0],
                       "mcnemar_p": [0.1, 0.3, 0.5, 1.0], "cer_from": [0.5] * 4, "cer_to": [0.4, 0.3, 0.4, 0.5]})
    vs["relative_reduction"] = [relative_reduction(a, b) for a, b in zip(vs.deg_from, vs.deg_to)]
    red = reductions(vs)
    assert red.family.tolist() == ["a", "b", "c", "mean"] and red.beta.tolist()[:2] == [0.1, 0.1]
    assert red.relative_reduction.tolist()[:2] == [0.75, 0.5] and math.isnan(red.relative_reduction[2])
    assert red.relative_reduction.iloc[-1] == 0.625
