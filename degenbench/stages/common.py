"""What SFT and DPO share: trainer arguments from config, checkpoints and resuming, W&B wiring,
loading a trained stage."""
from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import TrainerCallback

from degenbench import families, tracking
from degenbench.generate import input_stats

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
        logging_nan_inf_filter=False,  # the default hides NaN losses from the log, and from LossGuard
        # checkpoints in the artifact's partial folder: a killed build resumes from the newest
        save_strategy="steps", save_steps=cfg.checkpoint.save_steps,
        save_total_limit=cfg.checkpoint.save_total_limit,  # weights as safetensors (transformers 5: always)
        report_to=report_to, use_cpu=cpu,
        bf16=bool(train.bf16) and not cpu, fp16=False,
        activation_checkpointing=bool(train.gradient_checkpointing) and not cpu,
        max_length=None,  # never truncate: image tokens must stay whole
        dataloader_num_workers=0, disable_tqdm=False,
    )


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint in `folder` that was saved whole: the trainer writes its
    trainer_state.json last, so one that parses marks a complete checkpoint. Newer, half-written
    ones (killed while saving) are removed, never read."""
    steps = [(int(p.name.split("-")[1]), p) for p in Path(folder).glob("checkpoint-*")
             if p.name.split("-")[1].isdigit()] if Path(folder).is_dir() else []
    for _, ckpt in sorted(steps, reverse=True):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            return ckpt
        except (OSError, ValueError):
            log.warning("removing %s: interrupted while it was being saved", ckpt)
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def fit(trainer, out: Path, what: str, fsdp_resume: bool = False):
    """trainer.train(), resumed from the newest complete checkpoint a killed build left in
    `out/trainer` (weights, optimizer, scheduler and RNG: the result equals an uninterrupted run).
    Under FSDP the checkpoint is sharded and only transformers' own FSDP loader reads it; that
    path is not rehearsed here (FSDP needs GPUs), so it is taken only when asked for."""
    ckpt = last_checkpoint(out / "trainer")
    if ckpt is not None and getattr(trainer, "is_fsdp_enabled", False) and not fsdp_resume:
        raise RuntimeError(f"{what} was interrupted under FSDP; degenbench cannot vouch for resuming FSDP's sharded "
                           f"checkpoint {ckpt} (its resume is tested under DDP and on one process only). Rerun with "
                           f"checkpoint.fsdp_resume=true to resume through transformers' FSDP loader, or delete "
                           f"{out} to train from the start")
    if ckpt is not None:
        log.info("resuming %s from %s", what, ckpt)
    return trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)


class ResumableWeights:
    """Trainer mixin: a full model resumes its checkpoint's weights through from_pretrained, which
    maps the key names save_pretrained wrote back onto the architecture. transformers 5's Trainer
    loads them raw, and for Qwen2.5-VL (keys renamed on save) keeps none of them: it only warns
    about missing keys and trains on from the initial weights. Adapters resume the Trainer's way."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from peft import PeftModel

        model = model or self.model
        if isinstance(model, PeftModel) or self.is_fsdp_enabled:  # FSDP: its own sharded checkpoint format
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype, use_safetensors=True)
        model.load_state_dict(saved.state_dict(), strict=True)


def save_trained(trainer, processor, out: Path) -> None:
    """The trained model (safetensors) and its processor in `out/model`; then the checkpoints go.
    transformers also pickles the training arguments beside the weights: removed, so the artifact
    holds no pickle (the run's config.yaml records every argument)."""
    trainer.save_model(str(out / MODEL_DIR))  # process 0 only
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(out / MODEL_DIR))
        (out / MODEL_DIR / "training_args.bin").unlink(missing_ok=True)
        shutil.rmtree(out / "trainer", ignore_errors=True)


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

        if not (model_dir / "adapter_model.safetensors").is_file():  # PEFT would fall back to a pickle
            raise FileNotFoundError(f"{model_dir} has no adapter_model.safetensors; degenbench loads "
                                    "weights only as safetensors (re-save the adapter with PEFT >= 0.4)")

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
def wandb_training(cfg: DictConfig, job_type: str, name: str, out: Path):
    """A W&B run around a trainer (transformers' callback logs into the active run). Its id comes
    from the artifact being built, so a resumed build continues its W&B run, not a second one."""
    key = out.name.removesuffix(".partial").rsplit("-", 1)[-1]
    main = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch: only rank 0 logs
    run = tracking.start(cfg, job_type=job_type, name=name, run_id=f"{job_type}-{key}") if main else None
    try:
        yield ["wandb"] if run is not None else []
    finally:
        if run is not None:
            run.finish()


class InputStats:
    """A trainer's data collator, wrapped: records the image tokens and BOS tokens of every row
    training saw, for the artifact's record (the same counts as generation's inputs, or a
    mismatch shows)."""

    def __init__(self, collator, processor):
        self.collator, self.processor, self.rows = collator, processor, []

    def __call__(self, examples):
        batch = self.collator(examples)
        self.rows += input_stats(batch["input_ids"], batch["attention_mask"], self.processor)
        return batch

    def summary(self) -> dict:
        return {k: sorted({r[k] for r in self.rows}) for k in ("image_tokens", "bos_tokens")} | {"rows": len(self.rows)}


class LossGuard(TrainerCallback):
    """Stop on a NaN/inf loss or gradient norm with a clear error instead of training on garbage,
    keeping the last checkpoint written before it. A step that saves also logs: the logged loss
    averages every step since the last log and a NaN poisons the average, so no checkpoint is
    written after a bad step."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = {k: v for k, v in (logs or {}).items()
               if k in ("loss", "grad_norm") and not torch.isfinite(torch.tensor(float(v)))}
        if bad:
            good = last_checkpoint(Path(args.output_dir))
            kept = f"the last checkpoint before it is kept: {good}" if good else "no checkpoint was saved yet"
            raise FloatingPointError(f"training {' and '.join(f'{k} became {v}' for k, v in bad.items())} "
                                     f"at step {state.global_step}; {kept}. Lower the learning rate or "
                                     "check the data")
