"""Peak GPU memory of one SFT or DPO training step on a real-size family, estimated offline.

The activation terms are counted, not guessed: the family's real architecture (family.sizes.shape
config, with LoRA as training applies it) runs a forward pass on PyTorch's meta device (shapes
only: no weights, no GPU, seconds) while autograd's saved-tensor hooks add up what backward keeps.
One and two decoder layers give the bytes per token of a layer and of the rest (embeddings, final
norm, LM head, the loss over the vocabulary). The step is then put together:

  weights (bf16)  +  LoRA weights, gradients and AdamW state (fp32)
  + gradient checkpointing: every layer's input kept, one layer's activations at a time
    (without it: every layer's activations)
  + the LM head and loss for every token of the micro-batch
  + DPO: chosen and rejected rows (2 per pair), the reference pass (adapter off, no grad)
  + workspace (CUDA context, allocator slack)

Sequences are as long as a real page makes them: its image tokens (the architecture adapter's
image_tokens: Qwen2.5-VL max_pixels / 28^2, Gemma3 256), the prompt, and a completion as long as
the generation budget (a rejected loop runs to it).
Measured on a GPU by benchmarks/real_size.py; this is the estimate it checks.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from degenbench.models.arch import adapter

GIB = 2**30
WORKSPACE = 3 * GIB  # CUDA context, cuBLAS workspaces, allocator fragmentation
PROMPT_TEXT_TOKENS = 96  # template, system prompt and the task prompt around the page


@lru_cache(maxsize=16)
def _per_token(family_yaml: str) -> dict:
    """Saved bytes per token: one decoder layer, and everything outside the layers (LoRA on)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig

    family = OmegaConf.create(family_yaml)
    spec = OmegaConf.to_container(family.sizes.shape.config, resolve=True)
    model_type, text = spec.pop("model_type"), spec.pop("text_config")
    seq, saved = 256, {}
    for layers in (1, 2):
        conf = AutoConfig.for_model(model_type, text_config=dict(text, num_hidden_layers=layers), **spec)
        with torch.device("meta"):  # SDPA, as on a GPU: no seq x seq attention weights are kept
            model = get_class(family.model_class)._from_config(conf, dtype=torch.bfloat16, attn_implementation="sdpa")
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=family.lora_target_modules))
        weights, storages = {p.untyped_storage()._cdata for p in model.parameters()}, {}

        def pack(t):  # what backward keeps, less the weights matmuls keep (counted once, as weights)
            if t.untyped_storage()._cdata not in weights:
                storages[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
            return t

        ids = torch.zeros(1, seq, dtype=torch.long, device="meta")
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, labels=ids)
        saved[layers] = sum(storages.values()) / seq
    return {"layer": saved[2] - saved[1], "rest": 2 * saved[1] - saved[2], "hidden": text["hidden_size"],
            "layers": text["num_hidden_layers"]}


@lru_cache(maxsize=16)
def _params(family_yaml: str) -> tuple[int, int]:
    """(all parameters, LoRA parameters) of the real architecture, counted on the meta device."""
    from peft import LoraConfig, get_peft_model

    from degenbench.models.families import shape_model

    family = OmegaConf.create(family_yaml)
    with torch.device("meta"):
        model = shape_model(family, torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=family.lora_target_modules))
    return n, sum(p.numel() for p in lora.parameters() if p.requires_grad)


def estimate(cfg: DictConfig, stage: str) -> dict:
    """The estimated peak of one `stage` ("sft" or "dpo") micro-batch for cfg's family and
    settings, in GiB, with its parts."""
    family = OmegaConf.to_yaml(cfg.family, resolve=True)
    train = (cfg.sft if stage == "sft" else cfg.dpo).trainer
    n_params, n_lora = _params(family)
    per = _per_token(family)
    image = adapter(cfg.family).image_tokens(cfg.family)
    seq = image + PROMPT_TEXT_TOKENS + cfg.data.max_new_tokens
    rows = train.per_device_train_batch_size * (2 if stage == "dpo" else 1)  # DPO: chosen and rejected
    tokens = rows * seq
    if train.activation_checkpointing:
        layers = tokens * (per["layers"] * per["hidden"] * 2 + per["layer"])
    else:
        layers = tokens * per["layers"] * per["layer"]
    parts = {"weights": n_params * 2, "lora_and_adamw": n_lora * 16 if cfg.sft.method == "lora" else n_params * 16,
             "layer_activations": layers, "head_and_loss": tokens * per["rest"], "workspace": WORKSPACE}
    if stage == "dpo":  # the reference pass's logits (bf16 and fp32) while its log-probs are taken
        parts["reference_logits"] = tokens * cfg.family.sizes.shape.config.text_config.vocab_size * 6
    out = {k: round(v / GIB, 1) for k, v in parts.items()}
    return out | {"total_gib": round(sum(parts.values()) / GIB, 1), "sequence_tokens": seq, "rows": rows,
                  "gradient_checkpointing": bool(train.activation_checkpointing),
                  "batch_size": train.per_device_train_batch_size}
