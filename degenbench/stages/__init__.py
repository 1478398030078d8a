"""Pipeline stages: SFT, candidate sampling, judging, pairs, DPO; and the graph that runs them."""
