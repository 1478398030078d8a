"""What SFT and DPO share: trainer arguments from config, W&B wiring, loading a trained stage."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import TrainerCallback

from degenbench import families, tracking

log = logging.getLogger(__name__)
MODEL_DIR = "model"  # inside a training artifact: the adapter (LoRA) or the full model


def trainer_args(cfg: DictConfig, train: DictConfig, out: Path, report_to: list[str]) -> dict:
    """Arguments common to SFTConfig and DPOConfig. bf16 on GPU when asked; float32 on CPU."""
    cpu = families.pick_device(cfg.device).type == "cpu"
    return dict(
        output_dir=str(out / "trainer"), seed=cfg.seed, data_seed=cfg.seed,
        num_train_epochs=train.epochs, max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum, learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler, warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay, logging_steps=train.logging_steps,
        save_strategy="no", report_to=report_to, use_cpu=cpu,
        bf16=bool(train.bf16) and not cpu, fp16=False,
        activation_checkpointing=bool(train.gradient_checkpointing) and not cpu,
        max_length=None,  # never truncate: image tokens must stay whole
        dataloader_num_workers=0, disable_tqdm=False,
    )


def lora_config(cfg: DictConfig):
    from peft import LoraConfig

    lora = cfg.sft.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=cfg.family.lora_target_modules, task_type="CAUSAL_LM")


def load_trained(cfg: DictConfig, model_dir: Path | None, trainable: bool = False):
    """(model, processor) of a stage: the base (None), base + LoRA adapter, or a full model dir.
    For evaluation (not trainable) an adapter is merged into the base for plain-model speed."""
    if not trainable and cfg.generation.get("backend", "hf") == "vllm":
        return _vllm(cfg, model_dir)
    if model_dir is None:
        return families.load(cfg.family, cfg.device)
    model_dir = Path(model_dir)
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        model, processor = families.load(cfg.family, cfg.device)
        model = PeftModel.from_pretrained(model, str(model_dir), is_trainable=trainable)
        return (model if trainable else model.merge_and_unload()), processor
    return families.load(cfg.family, cfg.device, weights=str(model_dir))


def _vllm(cfg: DictConfig, model_dir: Path | None):
    """A vLLM engine on the stage's full weights (a LoRA stage: its merged copy, made once)."""
    from omegaconf import OmegaConf

    from degenbench.backends import vllm
    from degenbench.stages.store import build_once

    if model_dir is not None and (Path(model_dir) / "adapter_config.json").is_file():
        def merge(tmp: Path):
            model, processor = load_trained(OmegaConf.merge(cfg, {"generation": {"backend": "hf"}}), model_dir)
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)

        model_dir = build_once(Path(model_dir).parent, "vllm", "merged", "model", merge)
    return vllm.load(cfg.family, model_dir), families.load_processor(cfg.family)


@contextmanager
def wandb_training(cfg: DictConfig, job_type: str, name: str):
    """A W&B run around a trainer (transformers' callback logs into the active run)."""
    run = tracking.start(cfg, job_type=job_type, name=name)
    try:
        yield ["wandb"] if run is not None else []
    finally:
        if run is not None:
            run.finish()


class LossGuard(TrainerCallback):
    """Stop on a NaN/inf loss with a clear error instead of training on garbage."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not torch.isfinite(torch.tensor(loss)):
            raise FloatingPointError(f"training loss became {loss} at step {state.global_step}; "
                                     "lower the learning rate or check the data")
