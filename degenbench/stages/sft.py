"""SFT: TRL SFTTrainer on the training split's JSON answers, LoRA or full fine-tuning."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from trl import SFTConfig, SFTTrainer

from degenbench import families
from degenbench.documents import Document
from degenbench.stages.data import sft_dataset
from degenbench.stages.training import (InputStats, LossGuard, ResumableWeights, fit, lora_config, save_trained,
                                        trainer_config)
from degenbench.tracking import wandb_training

log = logging.getLogger(__name__)


class Trainer(ResumableWeights, SFTTrainer):
    pass


def train_sft(cfg: DictConfig, train_docs: list[Document], out: Path, init: Path | None = None) -> dict:
    """Fine-tune the family's base (or the full weights in `init`) on `train_docs`; the result goes
    to `out/model` (safetensors)."""
    model, processor = families.load(cfg.family, cfg.device, weights=str(init) if init else None)
    model.train()
    skipped = []  # pages that fail evaluation's checks: counted, named, recorded with the artifact
    dataset = sft_dataset(cfg.family, train_docs, cfg.data.get("max_image_pixels"), skipped)
    with wandb_training(cfg, "sft-train", f"{cfg.family.name}-sft-train", out) as report_to:
        args = trainer_config(SFTConfig, cfg, cfg.sft.trainer, out, report_to)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                             peft_config=lora_config(cfg) if cfg.sft.method == "lora" else None,
                             callbacks=[LossGuard()])
        trainer.data_collator = inputs = InputStats(trainer.data_collator, processor)
        result = fit(trainer, out, f"SFT of {cfg.family.name}", cfg.checkpoint.fsdp_resume)
    save_trained(trainer, processor, out)
    log.info("SFT %s: %d steps, final train loss %.4f", cfg.family.name, result.global_step,
             result.training_loss)
    return {"method": cfg.sft.method, "steps": result.global_step, "train_loss": result.training_loss,
            "n_docs": len(dataset), "doc_ids": list(dataset["doc_id"]), "n_skipped": len(skipped),
            "skipped": skipped, "inputs": inputs.summary(),
            "log_history": trainer.state.log_history}
