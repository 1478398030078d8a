"""Decoding: batched generation (transformers or vLLM), loop-aware stopping, and the
decode-time mitigations."""
