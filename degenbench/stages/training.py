"""What SFT and DPO share: the TRL config from Hydra, checkpoints and resuming, the guards.

`sft.trainer` / `dpo.trainer` are passed to SFTConfig / DPOConfig as they are: any TRL field can be
set from the command line (`sft.trainer.optim=adamw_torch_fused`) and TRL validates it. degenbench
sets only what it must: where checkpoints go and how often (`checkpoint.*`, so a killed build
resumes), the seed, W&B reporting, the CPU (float32: bf16 off), and NaN logging for LossGuard.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback

from degenbench.models import families
from degenbench.models.chat import input_stats

log = logging.getLogger(__name__)
MODEL_DIR = "model"  # inside a training artifact: the adapter (LoRA) or the full model
# TrainingArguments fields that never change the trained model: left out of artifact keys.
NOT_RESULT = ("logging_", "save_", "report_to", "run_name", "output_dir", "disable_tqdm", "log_level",
              "hub_", "push_to_hub", "dataloader_num_workers", "dataloader_pin_memory",
              "dataloader_persistent_workers", "dataloader_prefetch_factor", "include_num_input_tokens_seen")


def result_settings(trainer: DictConfig) -> dict:
    """The trainer settings that define the result (for the artifact key)."""
    args = OmegaConf.to_container(trainer, resolve=True)
    return {k: v for k, v in args.items() if not k.startswith(NOT_RESULT)}


def training_precision(cfg: DictConfig, trainer: DictConfig) -> dict:
    """Where and in what precision a stage trains: part of its artifact key."""
    where = families.precision(cfg.family, cfg.device)
    return where | {"bf16": bool(trainer.get("bf16")) and where["device"] != "cpu"}


def trainer_config(config_class, cfg: DictConfig, trainer: DictConfig, out: Path, report_to: list[str]):
    """`config_class` (SFTConfig, DPOConfig, KTOConfig, ...) from the stage's `trainer` settings, plus
    what degenbench must set. A field TRL does not know is an error naming it."""
    args = OmegaConf.to_container(trainer, resolve=True)
    # a null setting the class lacks is no setting (dpo.trainer.loss_weights under KTOConfig); a
    # value for a field it lacks stays an error
    known = {f.name for f in dataclasses.fields(config_class)}
    args = {k: v for k, v in args.items() if v is not None or k in known}
    cpu = families.pick_device(cfg.device).type == "cpu"
    forced = dict(
        output_dir=str(out / "trainer"), seed=cfg.seed, data_seed=cfg.seed, report_to=report_to, use_cpu=cpu,
        # checkpoints in the artifact's partial folder: a killed build resumes from the newest
        save_strategy="steps", save_steps=cfg.checkpoint.save_steps, save_total_limit=cfg.checkpoint.save_total_limit,
        logging_nan_inf_filter=False)  # the default hides NaN losses from the log, and from LossGuard
    clash = sorted(set(args) & set(forced) - {"report_to"})
    if clash:
        raise ValueError(f"{trainer._get_full_key('')}: {clash} are set by degenbench (seed: `seed`, checkpoints: "
                         "`checkpoint.*`, device: `device`); remove them from the trainer settings")
    if cpu:
        args["bf16"] = args["fp16"] = False  # CPU trains in float32
    try:
        return config_class(**(args | forced))
    except TypeError as e:
        raise ValueError(f"{trainer._get_full_key('')}: {e}; see {config_class.__name__}'s fields in TRL") from e


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
    try:
        return trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    except Exception as e:  # OSError, torch's RuntimeError, safetensors' SafetensorError
        # torch.save on a full disk says "[enforce fail at inline_container.cc:...] unexpected pos"
        full = getattr(e, "errno", None) == errno.ENOSPC or "unexpected pos" in str(e) or "No space left" in str(e)
        if not full:
            raise
        free = shutil.disk_usage(out).free / 2**20
        raise OSError(errno.ENOSPC, f"{what}: the disk holding {out} is full ({free:.0f} MB free) while saving a "
                      "checkpoint; free space there or set paths.results_dir to a larger disk, and rerun: the build "
                      "resumes from its last complete checkpoint") from e


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
    """PEFT's LoraConfig from `sft.lora`, field for field (PEFT validates them)."""
    from peft import LoraConfig

    try:
        return LoraConfig(**OmegaConf.to_container(cfg.sft.lora, resolve=True))
    except TypeError as e:
        raise ValueError(f"sft.lora: {e}; see peft.LoraConfig's fields") from e


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
