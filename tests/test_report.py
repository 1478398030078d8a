"""Report arithmetic on small real inputs: the paper's relative-reduction figures."""
import math

import pandas as pd

from degenbench.analysis import reductions, relative_reduction


def test_paper_rates_give_the_papers_reductions():
    assert f"{relative_reduction(0.0161, 0.0020):.1%}" == "87.6%"  # Nanonets-OCR2-3B, SFT -> DPO
    assert f"{relative_reduction(0.0323, 0.0141):.1%}" == "56.3%"  # Qwen2.5-VL-3B, SFT -> DPO
    assert math.isnan(relative_reduction(0.0, 0.0))  # nothing looped: no reduction is defined


def test_reductions_keep_the_beta_chosen_on_validation_and_average_the_pooled_ones():
    """Family a: beta 0.5 was chosen on validation, so its row is kept though 0.1 reduces more on
    the reported set; family b had no validation runs: every beta is shown, none averaged."""
    vs = pd.DataFrame({"family": ["a", "a", "a", "b", "b"], "size": "tiny", "eval_set": "heldout",
                       "seed": ["pooled", "pooled", 0, "pooled", "pooled"], "n_seeds": [2, 2, 1, 2, 2],
                       "from": "sft", "beta": [0.1, 0.5, 0.5, 0.1, 0.5],
                       "beta_chosen_on": [None, "validation", "validation", None, None], "n_docs": 100,
                       "deg_from": [0.04, 0.04, 0.05, 0.02, 0.02], "deg_to": [0.0, 0.02, 0.01, 0.01, 0.015],
                       "mcnemar_p": 0.5, "cer_from": 0.5, "cer_to": 0.4})
    vs["relative_reduction"] = [relative_reduction(a, b) for a, b in zip(vs.deg_from, vs.deg_to)]
    red = reductions(vs)
    assert list(zip(red.family, red.seed.astype(str), red.beta.fillna(0))) == [
        ("a", "pooled", 0.5), ("a", "0", 0.5), ("b", "pooled", 0.1), ("b", "pooled", 0.5), ("mean", "pooled", 0)]
    assert red.relative_reduction.iloc[0] == 0.5 and red.relative_reduction.iloc[-1] == 0.5  # a's pooled only
