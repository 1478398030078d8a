"""Best-of-N by DPO's implicit reward (mitigation=best_of_n, seed 002's question): sample N answers
from the DPO model and keep the one with the highest

    r(y) = beta * (log pi_dpo(y | page) - log pi_ref(y | page))

with the reference the SFT model DPO started from. The log-probabilities are teacher-forced sums
over the sampled tokens, the end-of-turn token included where the sample has one (a loop cut at
the limit has none), under each model's own unprocessed distribution. Beta scales every sample
alike, so the choice is the log-ratio's argmax; it is recorded with the rewards.
"""
from __future__ import annotations

import time

import torch
from omegaconf import DictConfig

from degenbench.models.chat import Output, encode


def token_logps(model, processor, family: DictConfig, image, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each token of each row after the page's prompt, the mask of real tokens): rows
    right-padded to the longest. Differentiable: a caller under no_grad gets no graph."""
    prompt = encode(processor, family, [image] * len(rows)).to(model.device)
    width = max(1, max(len(r) for r in rows))
    pad = processor.tokenizer.pad_token_id or 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    ids, mask = ids.to(model.device), mask.to(model.device)
    n_prompt = prompt["input_ids"].shape[1]
    inputs = dict(prompt)
    for k, v in prompt.items():  # the per-token inputs grow by the answer; the answer holds no image token
        if torch.is_tensor(v) and v.dim() == 2 and v.shape == prompt["input_ids"].shape:
            extra = ids if k == "input_ids" else mask if k == "attention_mask" else torch.zeros_like(ids, dtype=v.dtype)
            inputs[k] = torch.cat([v, extra.to(v.dtype)], dim=1)
    logits = model(**inputs, use_cache=False).logits[:, n_prompt - 1:-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1) * mask, mask


@torch.inference_mode()
def completion_logps(model, processor, family: DictConfig, image, rows: list[list[int]]) -> list[float]:
    """Sum of log p(token) over each row of generated token ids, after the page's prompt."""
    if not rows:
        return []
    logps, _ = token_logps(model, processor, family, image, rows)
    return logps.sum(dim=1).tolist()


def implicit_rewards(policy, reference, processor, family: DictConfig, image, rows: list[list[int]],
                     beta: float) -> list[float]:
    pol = completion_logps(policy, processor, family, image, rows)
    ref = completion_logps(reference, processor, family, image, rows)
    return [beta * (p - r) for p, r in zip(pol, ref)]


def pick(rewards: list[float]) -> int:
    """The sample kept: the highest reward, the first of ties."""
    return max(range(len(rewards)), key=lambda j: (rewards[j], -j))


def best_of_n(generate, policy, reference, processor, family: DictConfig, images: list, gen: DictConfig,
              n: int, beta: float, seed: int) -> list[tuple[list[Output], list[float], int]]:
    """Per page: its N samples, their rewards and the index kept. `generate(images, gen, n, seed)`
    samples N rows per page (generate.generate with the model bound). Each sample's `seconds` is its
    share of the sampling plus its share of the page's scoring, so the page's seconds count both."""
    samples = generate(images, gen, n, seed)
    out = []
    for i, image in enumerate(images):
        rows = samples[i * n:(i + 1) * n]
        start = time.perf_counter()
        rewards = implicit_rewards(policy, reference, processor, family, image, [o.token_ids for o in rows], beta)
        scoring = (time.perf_counter() - start) / n
        for o in rows:
            o.seconds += scoring
        out.append((rows, rewards, pick(rewards)))
    return out
