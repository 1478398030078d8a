"""Unlikelihood training against loops (Welleck et al. 2019, arXiv 1908.04319), as a TRL trainer.

TRL has no unlikelihood loss. This trainer reuses DPOTrainer's data pipeline (the same pairs, the
same collator: each batch is [chosen rows, rejected rows]) and replaces the loss:

    loss = NLL(chosen answer) + alpha * mean over repeated tokens t of the rejected sample of
           -log(1 - p(y_t | y_<t, page))

where a token is *repeated* when the n-gram it completes already occurred earlier in that sample
(the sequence-level candidates of Welleck et al., section 5, with the sample's own tokens as the
negatives). The rejected answers are the model's own looping samples, so the loss pushes down
exactly the tokens that continue a loop, and only those; the truth (chosen) keeps its NLL. No
reference model enters the loss (beta is unused).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import DPOConfig, DPOTrainer


@dataclass
class UnlikelihoodConfig(DPOConfig):
    """DPOConfig (data, batching, optimisation) plus the unlikelihood loss's two settings."""
    unlikelihood_ngram: int = field(default=4, metadata={"help": "a token is repeated when the n-gram it "
                                                                 "completes occurred earlier in the sample"})
    unlikelihood_alpha: float = field(default=1.0, metadata={"help": "weight of the unlikelihood term"})


def repeated_mask(ids: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """For each row of token `ids` (where `mask` is true: the completion), true at every token that
    completes an n-gram seen earlier in the same row's completion."""
    out = torch.zeros_like(mask, dtype=torch.bool)
    for r in range(ids.size(0)):
        pos = mask[r].nonzero().flatten().tolist()
        toks = ids[r, pos].tolist()
        seen: set[tuple] = set()
        for i in range(n - 1, len(toks)):
            gram = tuple(toks[i - n + 1:i + 1])
            if gram in seen:
                out[r, pos[i]] = True
            seen.add(gram)
    return out


def unlikelihood_loss(logps: torch.Tensor, repeated: torch.Tensor) -> torch.Tensor:
    """Mean of -log(1 - p) over the repeated tokens (0 where there are none); `logps` are the
    log-probabilities of the tokens actually there."""
    if not repeated.any():
        return logps.sum() * 0.0  # keeps the graph
    p = logps[repeated].exp().clamp(max=1 - 1e-6)
    return -torch.log1p(-p).mean()


class UnlikelihoodTrainer(DPOTrainer):
    """DPOTrainer's data, the unlikelihood loss (module docstring). With a full model TRL builds a
    reference copy while it starts; the loss has no use for it, so it goes before training."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ref_model = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        keep = {k: v for k, v in inputs.items() if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
        completion = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion == 0, -100)
        out = model(**keep, use_cache=False, labels=labels, fused_lm_head=True)
        shift = completion[..., 1:].bool()
        logps = out.log_probs[:, -shift.size(1):]  # of each next token
        ids = inputs["input_ids"][..., 1:]
        chosen_m, rejected_m = shift.chunk(2, dim=0)
        chosen_lp, rejected_lp = logps.chunk(2, dim=0)
        nll = -chosen_lp[chosen_m].mean()
        repeated = repeated_mask(ids.chunk(2, dim=0)[1], rejected_m, self.args.unlikelihood_ngram)
        ul = unlikelihood_loss(rejected_lp, repeated)
        loss = nll + self.args.unlikelihood_alpha * ul
        mode = "train" if model.training else "eval"
        for k, v in (("nll", nll), ("unlikelihood", ul), ("logps/chosen", chosen_lp.masked_fill(~chosen_m, 0).sum(1).mean()),
                     ("repeated_tokens", repeated.sum(1).float().mean())):
            self._metrics[mode][k].append(self.accelerator.gather(v.detach()).mean().item())
        return (loss, out) if return_outputs else loss
