"""The stage graph is declared once (stages/graph.py: GRAPH, STAGES): what a job builds, in which
order, and which keys move with a setting follow from that declaration."""
import pytest

from conftest import TINY, builds
from degenbench.config import compose
from degenbench.stages.graph import GRAPH, STAGES, Keys, order


def needed_by(kind: str) -> set[str]:
    """`kind` and every node that needs it, directly or not."""
    out, grew = {kind}, True
    while grew:
        more = {k for k, a in GRAPH.items() if out & set(a.needs)} - out
        out, grew = out | more, bool(more)
    return out


def test_the_declaration_reads_as_the_pipeline():
    assert [k for k in order(STAGES["dpo"]) if GRAPH[k].build] == ["sft", "candidates", "pairs", "dpo"]
    assert [k for k in order(STAGES["sft"]) if GRAPH[k].build] == ["sft"]
    assert order(STAGES["vanilla"]) == ["base"]


def test_each_job_builds_its_stages_prerequisites_in_declared_order(chain):
    """vanilla, SFT, DPO 0.1, DPO 0.5 in one results folder: each job builds the nodes its stage's
    artifact needs, in graph.order, but those an earlier job built (the same kind and key)."""
    built, expected = set(), []
    for cfg in chain.cfgs.values():
        keys = Keys(cfg)
        for kind in order(STAGES[cfg.stage]):
            if GRAPH[kind].build is not None and (kind, getattr(keys, kind)) not in built:
                built.add((kind, getattr(keys, kind)))
                expected.append(kind)
    assert builds(chain.messages) == expected == ["sft", "candidates", "pairs", "dpo", "dpo"]


@pytest.mark.parametrize("override, defines", [
    ("seed=1", "data"), ("family.sizes.tiny.max_pixels=200704", "base"), ("sft.lora.r=8", "sft"),
    ("sampling.temperature=0.5", "candidates"), ("judge.min_score=0.5", "pairs"), ("dpo.beta=0.5", "dpo"),
])
def test_a_setting_moves_the_key_of_what_it_defines_and_of_all_that_needs_it(override, defines):
    before, after = Keys(compose(TINY + ["stage=dpo"])), Keys(compose(TINY + ["stage=dpo", override]))
    assert {k for k in GRAPH if getattr(before, k) != getattr(after, k)} == needed_by(defines)
