"""Generation backends behind `degenbench.generate.generate`'s interface: HF `generate` (the
default, in degenbench/generate.py) and vLLM (`generation.backend=vllm`, extra `vllm`)."""
